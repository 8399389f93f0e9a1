"""The migrator catalogue: one entry per migrator, ``none`` (the vanilla kernel) first.

Everything that names migrators reads this table at the moment it needs it:
the config schema (``[migrator.<name>]``), the control tree (the migrator list
and each migrator's ``offloading``/``reason_mask``/``auto`` files and its own
parameters), the System that builds them, the metrics (the ``migrator`` label
set and each parameter), bench's ``--migrators`` parsing and construction,
``bench scrape`` and the soak's knob flipper.  Adding a migrator is its class
plus one entry here (the test adds ``memcpy-test`` that way, with a parameter
of its own, and finds it in every one of those places).

An entry has one name, ``Migrator.name`` of what it builds, used on every
surface: the tree, the config, bench ``--migrators``, JSON rows, metric labels
and the trace.  The vanilla path is ``none`` everywhere, as the tree calls it
(SPEC).  Rejected: a second "label" (the vanilla path was ``none`` in the tree
and ``cpu`` in bench and the metrics), which made a dashboard query and a bench
row name one path two ways; ``mtcopy:1`` is the single-threaded batch CPU copy.

A migrator's parameters and counters are declared in its entry (:class:`Param`),
as a kernel module declares each with ``module_param_cb()``: name, how a write
parses, whether it may be written, the store (the migrator's own setter, so
one place validates) and help.  The daemon builds the files, config keys,
metrics and soak values from that.  Rejected: the daemon's knob table naming
each migrator's files (a new migrator, or a new parameter, meant editing the
daemon, and a store there went around the migrator's setter).

Rejected: a registration decorator on each class (import order would decide
what exists, and ``none`` has no class of its own), and a plugin entry point
(one repository, no third-party migrators to discover).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..dma import DmaDevice
from ..mm import NR_MAX_BATCHED_MIGRATION_LIMIT
from ..sysfs import Anything, Bool, Choice, Int
from ._cpu import CpuMigrator
from ._dcbm import DCBM_MAX_CHANNELS, DcbmMigrator
from ._migrator import Migrator
from ._mtcopy import MTCOPY_MAX_THREADS, MtcopyMigrator


@dataclass(frozen=True)
class Param:
    """One file of a migrator's directory, a ``module_param_cb()``.

    Its mode is 0644 when it has a parser, else 0444.  A parameter's
    write is parsed by ``parse`` (on the writer's thread, pure) and applied
    with ``store(migrator, value)``; it has a config key
    ``migrator.<name>.<param>`` when it has a ``default``.  A ``counter`` is
    a monotonic count: exported as a metric counter, and a write (if
    writable) resets the tree's view of it, not the count.
    """

    name: str
    help: str
    parse: Int | Bool | Choice | Anything | None = None
    store: Callable[[Any, Any], None] | None = None
    #: The value from the migrator (default: its attribute ``name``).
    get: Callable[[Any], Any] | None = None
    default: Any = None
    counter: bool = False
    #: What the soak's flipper writes (default: a parameter's range, a counter's reset).
    soak: tuple[str, ...] = ()

    def value(self, migrator: Migrator) -> Any:
        return self.get(migrator) if self.get is not None else getattr(migrator, self.name)


@dataclass(frozen=True)
class MigratorEntry:
    """One migrator as every layer names and builds it."""

    #: ``Migrator.name``: the tree's migrator list, the config, the soak, the
    #: ``migrator`` metric label and bench's ``--migrators`` (``none``: vanilla).
    name: str
    #: One line for the generated reference.
    help: str
    #: Directory of its tree files (``offloading``, ``reason_mask``, ``auto``, its params).
    tree: str | None = None
    #: ``make(dma, value)``: a fresh migrator whose first parameter is ``value``
    #: (None for the CPU default).
    make: Callable[[DmaDevice, int], Migrator] | None = None
    #: Its parameters and counters; the first is what bench's ``NAME:N`` sets.
    params: tuple[Param, ...] = ()

    @property
    def offload(self) -> bool:
        return self.make is not None

    @property
    def param(self) -> str | None:
        """The first parameter's name (bench's ``NAME:N``)."""
        return self.params[0].name if self.params else None

    @property
    def lo(self) -> int:
        return self.params[0].parse.lo if self.params else 0

    @property
    def hi(self) -> int:
        return self.params[0].parse.hi if self.params else 0

    @property
    def default(self) -> int:
        return self.params[0].default if self.params else 0


def _device_refused(m: DcbmMigrator) -> int:
    return m.device.batches_refused


#: Ordered; ``none`` first.  Tests extend it with ``monkeypatch.setitem``.
CATALOGUE: dict[str, MigratorEntry] = {e.name: e for e in (
    MigratorEntry(CpuMigrator.name, "the vanilla kernel: folio_mc_copy() in the move loop"),
    MigratorEntry(
        "mtcopy", "multi-threaded CPU copy (Zi Yan's copy_page_lists_mt)", "kernel/cpu_mt",
        lambda dma, n: MtcopyMigrator(n),
        (Param("threads", "copy threads per batch", Int(1, MTCOPY_MAX_THREADS),
               MtcopyMigrator.set_threads, default=2),)),
    MigratorEntry(
        "dcbm", "DMA batch copy over the dmaengine (the RFC's dcbm)", "module/dcbm/parameters",
        lambda dma, n: DcbmMigrator(dma, n),
        (Param("nr_dma_chan", "DMA channels a batch may claim", Int(1, DCBM_MAX_CHANNELS),
               DcbmMigrator.set_nr_dma_chan, default=4),
         Param("batch_size", "pages per batch dcbm asks the core for (0: the core's bound)",
               Int(0, NR_MAX_BATCHED_MIGRATION_LIMIT), DcbmMigrator.set_batch_size,
               default=0, soak=("0", "0", "1024", "8192")),
         Param("min_batch_pages", "batches smaller than this are declined (-EOPNOTSUPP)",
               Int(0, NR_MAX_BATCHED_MIGRATION_LIMIT), DcbmMigrator.set_min_batch_pages,
               default=0, soak=("0", "0", "16", "256")),
         Param("batches_refused", "batches refused for want of a channel (-EBUSY)",
               get=_device_refused, counter=True),
         Param("folios_migrated", "folios dcbm copied; any write resets this view to 0",
               Anything(), counter=True),
         Param("folios_failures", "folios dcbm left to the CPU; any write resets this view "
               "to 0", Anything(), counter=True))),
)}


def migrator_names() -> tuple[str, ...]:
    """Tree and config names, ``none`` first."""
    return tuple(CATALOGUE)


def offload_migrators() -> list[MigratorEntry]:
    """Entries of the registrable migrators (all but ``none``)."""
    return [e for e in CATALOGUE.values() if e.offload]
