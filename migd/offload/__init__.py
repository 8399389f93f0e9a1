"""Copy offload: the migrator interface, the registry, and the migrators."""

from ._catalogue import (
    CATALOGUE,
    MigratorEntry,
    Param,
    migrator_names,
    offload_migrators,
)
from ._cpu import FOLIOS_MC_COPY, CpuMigrator
from ._dcbm import DCBM_MAX_CHANNELS, DcbmMigrator
from ._dcbm_clear import clear_folio, cpu_clear_seconds
from ._dcbm_newest import VARIANTS as DCBM_VARIANTS
from ._migrator import NO_COMPILED_COPY, CompiledCopy, CopyBatch, Migrator
from ._mtcopy import MTCOPY_MAX_THREADS, MtcopyMigrator
from ._prezero import Fault, PrezeroPool, anon_fault
from ._registry import Offload, OffloadRegistry

__all__ = ["CATALOGUE", "FOLIOS_MC_COPY", "DCBM_MAX_CHANNELS", "DCBM_VARIANTS", "clear_folio",
           "cpu_clear_seconds", "Fault", "PrezeroPool", "anon_fault", "MTCOPY_MAX_THREADS",
           "NO_COMPILED_COPY",
           "CompiledCopy", "CopyBatch", "CpuMigrator",
           "DcbmMigrator", "Migrator", "MtcopyMigrator", "Offload", "OffloadRegistry",
           "MigratorEntry", "Param", "migrator_names", "offload_migrators"]
