"""Copy offload: the migrator interface, the registry, and the migrators."""

from ._cpu import CpuMigrator, folios_mc_copy
from ._migrator import CopyBatch, Migrator
from ._registry import Offload, OffloadRegistry

__all__ = ["CopyBatch", "CpuMigrator", "Migrator", "Offload", "OffloadRegistry",
           "folios_mc_copy"]
