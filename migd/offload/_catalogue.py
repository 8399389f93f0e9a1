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
from ._dcbm_newest import UINT_MAX, ULONG_MAX, VARIANTS
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
    #: How the value shows (default: a Bool as 0/1, else ``str``); a
    #: ``module_param(x, bool)`` shows ``Y``/``N`` (``param_get_bool()``).
    fmt: Callable[[Any], str] | None = None

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
    #: Its copies run on the DMA device's channels: their busy time is its.
    dma: bool = False

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


def _yn(v: Any) -> str:
    """``param_get_bool()``: ``Y`` or ``N``."""
    return "Y" if v else "N"


def _attr(name: str) -> Callable[[Any, Any], None]:
    def store(m: Any, v: Any) -> None:
        setattr(m, name, v)
    return store


def _bool_param(name: str, help: str) -> Param:
    return Param(name, help, Bool(), _attr(name), fmt=_yn, soak=("0", "1"))


def _dcbm_counter(name: str, help: str) -> Param:
    return Param(name, f"{help}; any write resets it to 0", Anything(), counter=True)


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
        lambda dma, n: DcbmMigrator(dma, n, variant="newest"),
        (Param("nr_dma_chan", "DMA channels a batch may claim (newest: acquired when "
               "offloading is enabled, EBUSY while offloading); the driver's default is 1",
               Int(1, DCBM_MAX_CHANNELS), DcbmMigrator.set_nr_dma_chan, default=1),
         Param("batch_size", "pages per batch dcbm asks the core for (0: the core's bound)",
               Int(0, NR_MAX_BATCHED_MIGRATION_LIMIT), DcbmMigrator.set_batch_size,
               default=0, soak=("0", "0", "1024", "8192")),
         Param("min_batch_pages", "batches smaller than this are declined (-EOPNOTSUPP)",
               Int(0, NR_MAX_BATCHED_MIGRATION_LIMIT), DcbmMigrator.set_min_batch_pages,
               default=0, soak=("0", "0", "16", "256")),
         Param("variant", "the driver's iteration: v6 (channels per batch, across "
               "devices) or newest (acquired at enable, one device group per batch, "
               "clearing); EBUSY while offloading", Choice(lambda: VARIANTS),
               DcbmMigrator.set_variant, default="newest", soak=()),
         Param("batches_refused", "batches refused for want of a channel (-EBUSY); any "
               "write resets it to 0", Anything(), get=_device_refused, counter=True),
         _dcbm_counter("folios_migrated", "folios dcbm copied"),
         _dcbm_counter("folios_failures", "folios dcbm left to the CPU"),
         _dcbm_counter("folios_cleared", "folios dcbm cleared (newest)"),
         _dcbm_counter("clear_failures", "clears that failed and fell back to the CPU"),
         _dcbm_counter("folios_gated", "clears refused by util_gate (every CPU busy)"),
         Param("min_clear_bytes", "smallest folio to clear by DMA (bytes)",
               Int(0, ULONG_MAX), _attr("min_clear_bytes"),
               soak=("0", "4096", "2097152", "4194304")),
         _bool_param("cpu_warm", "clear the faulting neighbourhood on the CPU while DMA "
                     "clears the rest"),
         _bool_param("util_gate", "refuse clears while every CPU is busy"),
         _bool_param("cache_ctrl", "request cache-allocating writes "
                     "(DMA_PREP_CACHE_CONTROL)"),
         Param("max_inflight", "descriptors in flight per channel before waiting for "
               "completions (1..; 0 would never submit)", Int(1, UINT_MAX),
               DcbmMigrator.set_max_inflight, soak=("1", "4", "32", "64")),
         Param("sg_elems", "folios per scatter-gather transaction on DMA_MEMCPY_SG "
               "engines (1..)", Int(1, UINT_MAX), DcbmMigrator.set_sg_elems,
               soak=("1", "8", "32"))), dma=True),
)}


def migrator_names() -> tuple[str, ...]:
    """Tree and config names, ``none`` first."""
    return tuple(CATALOGUE)


def offload_migrators() -> list[MigratorEntry]:
    """Entries of the registrable migrators (all but ``none``)."""
    return [e for e in CATALOGUE.values() if e.offload]
