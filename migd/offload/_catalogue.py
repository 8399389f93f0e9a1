"""The migrator catalogue: one entry per migrator, ``none`` (the vanilla kernel) first.

Everything that names migrators reads this table at the moment it needs it:
the config schema (``[migrator.<name>]``), the control tree (the migrator list
and each migrator's ``offloading``/parameter/``reason_mask``/``auto`` files),
the System that builds them, the metrics' ``migrator`` label set, bench's
``--migrators`` parsing and construction, ``bench scrape`` and the soak's knob
flipper.  Adding a migrator is its class plus one entry here (the test adds
``memcpy-test`` that way and finds it in all seven places).

An entry has one name, ``Migrator.name`` of what it builds, used on every
surface: the tree, the config, bench ``--migrators``, JSON rows, metric labels
and the trace.  The vanilla path is ``none`` everywhere, as the tree calls it
(SPEC).  Rejected: a second "label" (the vanilla path was ``none`` in the tree
and ``cpu`` in bench and the metrics), which made a dashboard query and a bench
row name one path two ways; ``mtcopy:1`` is the single-threaded batch CPU copy.

Rejected: a registration decorator on each class (import order would decide
what exists, and ``none`` has no class of its own), and a plugin entry point
(one repository, no third-party migrators to discover).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..dma import DmaDevice
from ._cpu import CpuMigrator
from ._dcbm import DCBM_MAX_CHANNELS, DcbmMigrator
from ._migrator import Migrator
from ._mtcopy import MTCOPY_MAX_THREADS, MtcopyMigrator


@dataclass(frozen=True)
class MigratorEntry:
    """One migrator as every layer names and builds it."""

    #: ``Migrator.name``: the tree's migrator list, the config, the soak, the
    #: ``migrator`` metric label and bench's ``--migrators`` (``none``: vanilla).
    name: str
    #: One line for the generated reference.
    help: str
    #: Directory of its tree files (``offloading``, the parameter, ``reason_mask``, ``auto``).
    tree: str | None = None
    #: Its one parameter: tree file, config key and attribute of the migrator.
    param: str | None = None
    lo: int = 0
    hi: int = 0
    default: int = 0
    #: ``make(dma, param)``: a fresh migrator (None for the CPU default).
    make: Callable[[DmaDevice, int], Migrator] | None = None
    #: What the parameter means, for the generated reference.
    param_help: str = ""

    @property
    def offload(self) -> bool:
        return self.make is not None


#: Ordered; ``none`` first.  Tests extend it with ``monkeypatch.setitem``.
CATALOGUE: dict[str, MigratorEntry] = {e.name: e for e in (
    MigratorEntry(CpuMigrator.name, "the vanilla kernel: folio_mc_copy() in the move loop"),
    MigratorEntry("mtcopy", "multi-threaded CPU copy (Zi Yan's copy_page_lists_mt)",
                  "kernel/cpu_mt", "threads", 1, MTCOPY_MAX_THREADS, 2,
                  lambda dma, n: MtcopyMigrator(n), "copy threads per batch"),
    MigratorEntry("dcbm", "DMA batch copy over the dmaengine (the RFC's dcbm)",
                  "module/dcbm/parameters", "nr_dma_chan", 1, DCBM_MAX_CHANNELS, 4,
                  lambda dma, n: DcbmMigrator(dma, n), "DMA channels a batch may claim"),
)}


def migrator_names() -> tuple[str, ...]:
    """Tree and config names, ``none`` first."""
    return tuple(CATALOGUE)


def offload_migrators() -> list[MigratorEntry]:
    """Entries of the registrable migrators (all but ``none``)."""
    return [e for e in CATALOGUE.values() if e.offload]
