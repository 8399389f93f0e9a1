"""The engine's books: counters, histograms, tracepoint-like records, and their listeners."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..mm import MR_TYPES, PAGE_SIZE, MigrateMode, MigrateReason
from ..offload import CpuMigrator
from ._kernels import histogram_observe

#: An empty folio list (head pfns), shared.
NO_FOLIOS = np.empty(0, dtype=np.int64)
#: No folio timed: no owner to charge.
NO_OWNERS = np.empty(0, dtype=np.int32)

#: vmstat items of page migration, as /proc/vmstat names them.
VMSTAT_ITEMS = ("pgmigrate_success", "pgmigrate_fail", "thp_migration_success",
                "thp_migration_fail", "thp_migration_split")


@dataclass
class MigrateStats:
    """``struct migrate_pages_stats`` for one ``migrate_pages()`` call."""

    nr_succeeded: int = 0  # base pages
    nr_failed_pages: int = 0
    nr_thp_succeeded: int = 0
    nr_thp_failed: int = 0
    nr_thp_split: int = 0
    nr_split: int = 0
    nr_folios_succeeded: int = 0
    nr_folios_failed: int = 0
    #: Not tried: left on the list when -ENOMEM stopped migration.  The kernel
    #: counts them nowhere; migd keeps them so that success + fail + untried
    #: = the pages handed in.
    nr_untried_pages: int = 0
    nr_folios_untried: int = 0
    #: CPU seconds this call spent copying folios (move-loop copies and CPU
    #: batch copies, all threads), which the kernel does not count either:
    #: what replay charges each call.
    cpu_copy_seconds: float = 0.0


class Histogram:
    """Cumulative-ready bucket counts with fixed upper bounds (Prometheus style)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds = list(bounds)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: np.ndarray) -> None:
        if values.size <= 16:  # bisect beats numpy's call overhead here
            for v in values.tolist():
                self.observe(v)
            return
        self.sum += histogram_observe(self.bounds, self.counts, values)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(tuple(self.bounds.tolist()), tuple(self.counts.tolist()),
                                 self.sum)


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; last is +Inf
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)


#: 1 us .. ~10 s, x2 steps: first-folio latency and inaccessible time.
SECONDS_BUCKETS = tuple(1e-6 * 2.0 ** i for i in range(24))
#: 1 .. 262144 base pages, x2 steps.
PAGES_BUCKETS = tuple(float(2 ** i) for i in range(19))


@dataclass(frozen=True)
class MigrateResult:
    """What ``migrate_pages()`` returns, plus the list the caller gets back."""

    rc: int  # 0, the number of folios not migrated, or -errno
    stats: MigrateStats
    failed: np.ndarray  # head pfns of folios left at the source (untried included)


class MigrateCall(NamedTuple):
    """One end of a ``migrate_pages()`` call, what mm/migrate.c traces there:
    ``trace_mm_migrate_pages_start(mode, reason)`` on entry (``end`` False,
    counts 0) and ``trace_mm_migrate_pages()`` with the call's
    ``struct migrate_pages_stats`` on return (``end`` True).  One record per
    call and end, not per batch: a tracer needs the call's totals, and the
    per-batch detail already goes out as :class:`BatchRecords`."""

    end: bool
    time: float  # trio clock, seconds
    mode: MigrateMode
    reason: MigrateReason
    nr_succeeded: int = 0  # base pages
    nr_failed: int = 0  # base pages (stats.nr_failed_pages)
    nr_thp_succeeded: int = 0  # THPs
    nr_thp_failed: int = 0
    nr_thp_split: int = 0
    nr_split: int = 0  # large folios split (THP or not)

    @classmethod
    def of(cls, end: bool, time: float, mode: MigrateMode, reason: MigrateReason,
           stats: MigrateStats | None = None) -> MigrateCall:
        """The record of a call's start (no ``stats``) or end (its totals)."""
        if stats is None:
            return cls(end, time, mode, reason)
        return cls(end, time, mode, reason, stats.nr_succeeded, stats.nr_failed_pages,
                   stats.nr_thp_succeeded, stats.nr_thp_failed, stats.nr_thp_split,
                   stats.nr_split)


class BatchRecord(NamedTuple):
    """One ``migrate_pages_batch()`` as the tracepoints would report it."""

    reason: str
    migrator: str
    mode: str
    target_nid: int
    nr_folios: int  # folios passed to the batch
    nr_pages: int
    nr_succeeded: int  # folios
    nr_failed: int  # folios (after retries, undo, split)
    nr_offloaded: int  # folios handed to the migrator's batch copy
    nr_fallback: int  # of those, copied by the CPU fallback
    fallback_cause: str | None
    start: float
    end: float
    first_folio_seconds: float | None  # batch entry -> first folio remapped
    inaccessible_seconds: np.ndarray  # per folio, unmap -> remap
    nr_passes: int = 1  # unmap passes actually run (retries included)


@dataclass(slots=True, eq=False)
class BatchRecords:
    """The ledger: consecutive batches of one ``migrate_pages()`` call, column-wise,
    with what happened to each folio as the kernel would see it.

    Every way of running a batch (``_way.Path``: the step path, the compiled
    fast path, the closed form) writes one of these and hands it to
    :meth:`EngineBooks.post`, the only place the engine's books, histograms,
    latency budget and listeners (trace events, ``/metrics``, bench and
    replay rows) are written from.  Per batch: folios and pages handed in,
    failed, split, untried, succeeded pages, who copied (``migrator``; the
    batch copy's folios and fallbacks), CPU copy seconds (the move loop's
    ``folio_mc_copy()`` and the migrator's CPU batch copy), timings.  Per
    folio (``inaccessible_offsets`` cut them by batch): unmap -> remap time,
    the owning tenant (``folio_tenant``, the folio's ``mapping``) and who
    copied it (``folio_cpu_copied``), for per-tenant accounting.  Numpy
    columns, one object per group of batches: an object per batch or folio
    cost more than a 2 MiB batch's copy.
    Iterating yields :class:`BatchRecord` rows.  Read-only by convention:
    not frozen, as a frozen dataclass of 25 fields took 4 us to build (a
    slotted one 0.5 us), per batch.
    """

    reason: str
    migrator: str
    mode: str
    target_nid: int
    fallback_cause: str | None
    nr_folios: np.ndarray
    nr_pages: np.ndarray
    nr_failed: np.ndarray
    nr_offloaded: np.ndarray
    nr_fallback: np.ndarray
    start: np.ndarray
    end: np.ndarray
    first_folio_seconds: np.ndarray  # NaN where no folio was remapped
    inaccessible_seconds: np.ndarray  # every folio of every batch, in order
    inaccessible_offsets: np.ndarray  # batch b's folios: [off[b], off[b + 1])
    nr_passes: np.ndarray | None = None  # unmap passes run; None: one each
    #: Folios -ENOMEM kept from being tried: neither succeeded nor failed.
    nr_untried: np.ndarray | None = None
    #: Of ``nr_failed``, large folios split on -ENOMEM (their parts go on in
    #: another batch); the books count neither them nor their pages here.
    nr_split: np.ndarray | None = None
    #: Base pages migrated and failed (None: every page migrated).
    nr_pages_ok: np.ndarray | None = None
    nr_pages_failed: np.ndarray | None = None
    #: The async try of a sync call (``migrate_pages_sync()``): its failures
    #: are retried one by one, so the books do not count them failed.
    retried: np.ndarray | None = None
    #: CPU seconds copying: the move loop's (``none``'s books) and the
    #: migrator's CPU batch copy (the batch's ``migrator``, all threads).
    cpu_move_seconds: np.ndarray | None = None
    cpu_batch_seconds: np.ndarray | None = None
    #: Per folio, aligned with ``inaccessible_seconds``: the owning tenant,
    #: and whether the move loop copied it (``folio_mc_copy()``: the vanilla
    #: order or a fallback; False: the batch copy did, or it was undone).
    folio_tenant: np.ndarray | None = None
    folio_cpu_copied: np.ndarray | None = None
    #: Per folio, aligned too: its order (what its copy seconds are split by).
    folio_order: np.ndarray | None = None

    @property
    def nr_succeeded(self) -> np.ndarray:
        """Folios migrated per batch: not failed, and tried."""
        out = self.nr_folios - self.nr_failed
        return out if self.nr_untried is None else out - self.nr_untried

    def __len__(self) -> int:
        return int(self.nr_folios.size)

    def longest_inaccessible(self) -> np.ndarray:
        """Each batch's longest per-folio inaccessible time (0 if none was unmapped)."""
        off = self.inaccessible_offsets
        some = off[1:] > off[:-1]
        out = np.zeros(len(self))
        if self.inaccessible_seconds.size:
            out[some] = np.maximum.reduceat(self.inaccessible_seconds, off[:-1][some])
        return out

    def __iter__(self):
        for b in range(len(self)):
            ff = float(self.first_folio_seconds[b])
            lo, hi = self.inaccessible_offsets[b], self.inaccessible_offsets[b + 1]
            yield BatchRecord(
                self.reason, self.migrator, self.mode, self.target_nid,
                int(self.nr_folios[b]), int(self.nr_pages[b]),
                int(self.nr_succeeded[b]), int(self.nr_failed[b]),
                int(self.nr_offloaded[b]), int(self.nr_fallback[b]), self.fallback_cause,
                float(self.start[b]), float(self.end[b]), None if ff != ff else ff,
                self.inaccessible_seconds[lo:hi],
                1 if self.nr_passes is None else int(self.nr_passes[b]))


@dataclass(frozen=True)
class EngineStatistics:
    """A frozen snapshot of everything the engine counts."""

    vmstat: dict[str, int]  # totals, /proc/vmstat names
    vmstat_by_reason: dict[str, dict[str, int]]
    #: (migrator, reason) -> counts of folios/bytes migrated and failed
    folios_migrated: dict[tuple[str, str], int]
    folios_failed: dict[tuple[str, str], int]
    bytes_migrated: dict[tuple[str, str], int]
    bytes_failed: dict[tuple[str, str], int]
    batches: dict[str, int]  # by migrator
    calls: dict[str, int]  # migrate_pages() calls, by mode ("async", "sync_light", "sync")
    fallbacks: dict[str, int]  # folios, by cause
    migrator_errors: dict[str, int]  # exceptions raised by migrate_offc(), by migrator
    cpu_copy_seconds: dict[str, float]  # by migrator ("none": move-loop copies)
    batch_pages: HistogramSnapshot
    first_folio_seconds: HistogramSnapshot
    inaccessible_seconds: HistogramSnapshot
    nr_max_batched_migration: int
    #: Pages handed to migrate_pages(); of those, never tried (-ENOMEM stopped
    #: the call) and still in flight: success + fail + untried + in flight = attempted.
    pages_attempted: int = 0
    pages_untried: int = 0
    pages_in_flight: int = 0
    #: (migrator, owner) -> the CPU copy seconds spent on the folios of
    #: cgroup ``owner`` (the tenant; -1: none): ``memory.stat``'s copy line.
    cpu_copy_seconds_by_owner: dict[tuple[str, int], float] = field(default_factory=dict)


#: Whose books hold the move loop's copies: the vanilla kernel's.
CPU_BOOKS = CpuMigrator.name

#: The fallback cause of a batch whose migrator raised (a bug, not an errno).
MIGRATOR_ERROR = "migrator_error"


@dataclass(frozen=True)
class MigratorError:
    """An exception raised inside a migrator's ``migrate_offc()``; its batch fell back."""

    migrator: str
    reason: str
    nr_folios: int
    error: BaseException


class EngineBooks:
    """Everything the engine counts, and who hears of it.

    The kernel's vmstat items per reason, folios and bytes per (migrator,
    reason), batches per migrator, calls per mode, fallbacks per cause, migrator
    errors, CPU copy seconds, three histograms, and the listeners of batch
    records and of migrator errors.  Written from the ledger (:meth:`post`,
    one :class:`BatchRecords` per group of batches, whichever way ran them),
    so that every way keeps the same books and ``_engine`` reads as
    mm/migrate.c does (rejected: each way adding to the counters itself, which
    let the ways' books drift apart); a single lock-free writer (the trio
    thread) and snapshot readers.
    """

    def __init__(self, budget) -> None:
        self.budget = budget
        self.vmstat = np.zeros((MR_TYPES, len(VMSTAT_ITEMS)), dtype=np.int64)
        self.folios: dict[tuple[str, str, bool], int] = {}
        self.bytes: dict[tuple[str, str, bool], int] = {}
        self.batches: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.fallbacks: dict[str, int] = {}
        self.migrator_errors: dict[str, int] = {}
        self.cpu_copy_seconds: dict[str, float] = {}
        self.cpu_by_owner: dict[tuple[str, int], float] = {}
        self.h_batch_pages = Histogram(PAGES_BUCKETS)
        self.h_first_folio = Histogram(SECONDS_BUCKETS)
        self.h_inaccessible = Histogram(SECONDS_BUCKETS)
        self.pages_attempted = 0
        self.pages_in_flight = 0
        self.pages_untried = 0
        self._listeners: list = []
        self._error_listeners: list = []
        self._call_listeners: list = []

    # -- observers --------------------------------------------------------------

    def subscribe(self, listener) -> object:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def subscribe_errors(self, listener) -> object:
        self._error_listeners.append(listener)
        return lambda: self._error_listeners.remove(listener)

    def subscribe_calls(self, listener) -> object:
        self._call_listeners.append(listener)
        return lambda: self._call_listeners.remove(listener)

    # -- writing ------------------------------------------------------------------

    @staticmethod
    def _add(d: dict, key, n) -> None:
        d[key] = d.get(key, 0) + n

    def count_folios(self, migrator: str, reason: str, nr_folios: int, nr_pages: int,
                     ok: bool) -> None:
        """Folios a call fails outside any batch (stopped, cancelled): the only
        books not written from the ledger, as no batch ran them."""
        self._add(self.folios, (migrator, reason, ok), nr_folios)
        self._add(self.bytes, (migrator, reason, ok), nr_pages * PAGE_SIZE)

    def _charge_folios(self, who: str, seconds: float, r: BatchRecords,
                       move_loop: bool) -> None:
        """memory.stat's copy seconds from the ledger: the move loop's to the
        folios it copied, a batch copy's to every folio of the batch."""
        owners = r.folio_tenant if r.folio_tenant is not None else NO_OWNERS
        pages = (np.left_shift(1, r.folio_order.astype(np.int64))
                 if r.folio_order is not None else np.ones(owners.size))
        if move_loop and r.folio_cpu_copied is not None:
            sel = r.folio_cpu_copied
            owners, pages = owners[sel], pages[sel]
        self._charge(who, seconds, owners, pages)

    def _charge(self, who: str, seconds: float, owners: np.ndarray,
                weights: np.ndarray) -> None:
        """``seconds`` of ``who``'s CPU copying charged to the cgroups
        ``owners`` of the folios copied, in proportion to ``weights`` (their
        pages); -1 (no owner) when none was timed.  Owners are small ints
        (tenant ids): one bincount, no sort."""
        by = self.cpu_by_owner
        if not owners.size:
            by[(who, -1)] = by.get((who, -1), 0.0) + seconds
            return
        first = int(owners[0])
        if (owners == first).all():  # one cgroup (a bench, a lone tenant): the same
            total = float(weights.sum())  # floats as below (integer weights: exact sums)
            if total > 0:
                key = (who, first)
                by[key] = by.get(key, 0.0) + total * seconds / total
                return
        shares = np.bincount(owners.astype(np.int64) + 1, weights=weights)
        total = float(shares.sum())
        if total <= 0:
            shares, total = np.bincount(owners.astype(np.int64) + 1), float(owners.size)
        for i in np.flatnonzero(shares).tolist():
            key = (who, i - 1)
            by[key] = by.get(key, 0.0) + float(shares[i]) * seconds / total

    def add_call(self, mode: str) -> None:
        self._add(self.calls, mode, 1)

    def post(self, r: BatchRecords, stats: MigrateStats) -> None:
        """The ledger's one reader for the books: folios and bytes per
        (migrator, reason), batches, fallbacks by cause, CPU copy seconds (also
        the call's ``stats``), the three histograms, the latency budget, then
        the listeners.  Sums of a group's columns; nothing per folio."""
        n = len(r)
        tot = (lambda a: int(a[0])) if n == 1 else (lambda a: int(a.sum()))
        name, reason = r.migrator, r.reason
        add = self._add
        nr_folios, nr_failed = tot(r.nr_folios), tot(r.nr_failed)
        untried = tot(r.nr_untried) if r.nr_untried is not None else 0
        split = tot(r.nr_split) if r.nr_split is not None else 0
        pages_ok = tot(r.nr_pages_ok) if r.nr_pages_ok is not None else tot(r.nr_pages)
        pages_failed = tot(r.nr_pages_failed) if r.nr_pages_failed is not None else 0
        ok_folios = nr_folios - nr_failed - untried
        failed = nr_failed - split
        if r.retried is not None and (r.retried[0] if n == 1 else r.retried.any()):
            failed, pages_failed = 0, 0
        add(self.folios, (name, reason, True), ok_folios)
        add(self.bytes, (name, reason, True), pages_ok * PAGE_SIZE)
        if failed:
            add(self.folios, (name, reason, False), failed)
            add(self.bytes, (name, reason, False), pages_failed * PAGE_SIZE)
        add(self.batches, name, n)
        if r.fallback_cause is not None:
            add(self.fallbacks, r.fallback_cause, tot(r.nr_fallback))
        for move_loop, who, col in ((True, CPU_BOOKS, r.cpu_move_seconds),
                                    (False, name, r.cpu_batch_seconds)):
            sec = 0.0 if col is None else float(col[0]) if n == 1 else float(col.sum())
            if sec > 0:
                add(self.cpu_copy_seconds, who, sec)
                stats.cpu_copy_seconds += sec
                self._charge_folios(who, sec, r, move_loop)
        ff = r.first_folio_seconds
        if n == 1:  # one batch: scalars, no numpy call
            self.h_batch_pages.observe(float(r.nr_pages[0]))
            first = float(ff[0])
            if first == first:
                self.h_first_folio.observe(first)
        else:
            self.h_batch_pages.observe_many(r.nr_pages.astype(np.float64))
            self.h_first_folio.observe_many(ff[ff == ff])
        self.h_inaccessible.observe_many(r.inaccessible_seconds)
        if self.budget.budget_us:
            self.budget.observe(r.migrator, r.nr_folios, r.nr_pages, r.longest_inaccessible())
        for listener in list(self._listeners):
            listener(r)

    def migrator_error(self, err: MigratorError) -> None:
        """Count a migrator's exception and hand it to the error listeners
        (the daemon logs it with its traceback); the batch has fallen back."""
        self._add(self.migrator_errors, err.migrator, 1)
        for listener in list(self._error_listeners):
            listener(err)

    def emit_call(self, call: MigrateCall) -> None:
        for listener in list(self._call_listeners):
            listener(call)

    # -- reading -------------------------------------------------------------------

    def statistics(self, nr_max_batched_migration: int) -> EngineStatistics:
        """A frozen snapshot.  Safe from any thread: every mutable container is
        copied in one C-level step before it is looked at."""
        folios, nbytes = dict(self.folios), dict(self.bytes)

        def split(d: dict, ok: bool) -> dict:
            return {(m, r): v for (m, r, good), v in d.items() if good == ok}
        vm = self.vmstat.copy()
        by_reason = {r.label: dict(zip(VMSTAT_ITEMS, vm[r].tolist(), strict=True))
                     for r in MigrateReason}
        return EngineStatistics(
            vmstat=dict(zip(VMSTAT_ITEMS, vm.sum(axis=0).tolist(), strict=True)),
            vmstat_by_reason=by_reason,
            folios_migrated=split(folios, True),
            folios_failed=split(folios, False),
            bytes_migrated=split(nbytes, True),
            bytes_failed=split(nbytes, False),
            batches=dict(self.batches),
            calls=dict(self.calls),
            fallbacks=dict(self.fallbacks),
            migrator_errors=dict(self.migrator_errors),
            cpu_copy_seconds=dict(self.cpu_copy_seconds),
            batch_pages=self.h_batch_pages.snapshot(),
            first_folio_seconds=self.h_first_folio.snapshot(),
            inaccessible_seconds=self.h_inaccessible.snapshot(),
            nr_max_batched_migration=nr_max_batched_migration,
            pages_attempted=self.pages_attempted,
            pages_untried=self.pages_untried,
            pages_in_flight=self.pages_in_flight,
            cpu_copy_seconds_by_owner=dict(self.cpu_by_owner),
        )
