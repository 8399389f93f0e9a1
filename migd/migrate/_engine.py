"""``migrate_pages()`` and ``migrate_pages_batch()`` (mm/migrate.c) on arrays of folios.

The control flow is the kernel's: cut the list into batches; per batch an unmap
loop (allocate the destination, lock, install migration entries) with retry
passes, one batched TLB flush, the batch copy through the active migrator, a
move loop (copy what is not yet copied, remap, unlock, free the source) and the
undo of whatever is left.  Control flow, clocks and accounting are here; the
per-folio work of each loop is compiled (``_kernels``), and the common case —
every folio unmapped on the first pass — takes no per-folio Python at all.

One deliberate difference in accounting: when a destination allocation fails
and migration stops (``-ENOMEM``), the kernel leaves the folios it never got to
out of ``pgmigrate_fail``.  migd counts them as failed, so that every page handed
to ``migrate_pages()`` ends as exactly one of ``pgmigrate_success`` and
``pgmigrate_fail``.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import trio

from ..faults import FaultInjector
from ..hw import Clock, HardwareProfile
from ..mm import (
    FOLIO_CONTENT_COPIED,
    HPAGE_PMD_ORDER,
    MR_TYPES,
    PAGE_SIZE,
    Machine,
    MigrateMode,
    MigrateReason,
    PG_locked,
    PG_movable_ops,
)
from ..mm._rmap import folio_isolate_batch, folio_putback_batch
from ..offload import CopyBatch, Offload, OffloadRegistry, folios_mc_copy
from ..offload._mtcopy import set_copy_threads
from . import _kernels as _k
from ._budget import BatchBudget, BudgetStatistics
from ._stats import (
    PAGES_BUCKETS,
    SECONDS_BUCKETS,
    VMSTAT_ITEMS,
    BatchRecords,
    EngineStatistics,
    Histogram,
    MigrateStats,
)

NR_MAX_BATCHED_MIGRATION = 512  # HPAGE_PMD_NR
NR_MAX_BATCHED_MIGRATION_LIMIT = 262144  # the knob's bound: 1 GiB of base pages
NR_MAX_MIGRATE_PAGES_RETRY = 10
MAX_INACCESSIBLE_US_LIMIT = 10_000_000  # the budget knob's bound: 10 s
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY

_EMPTY = np.empty(0, dtype=np.int64)
#: Longest one compiled fast-path call runs before the event loop gets a turn.
#: The call releases the GIL, so threads (the FUSE tree's readers) run during
#: it; only trio tasks wait.  Each call costs ~150 us of cache-cold Python
#: after it, hence slices long enough to amortise that to ~1% of a 2 MiB copy.
_FAST_PATH_SLICE_NS = 8_000_000


def errno_name(err: int) -> str:
    """The kernel's name of an errno (Python says ENOTSUP for 95; Linux, EOPNOTSUPP)."""
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, f"E{err}")


@dataclass(frozen=True)
class MigrateResult:
    """What ``migrate_pages()`` returns, plus the list the caller gets back."""

    rc: int  # 0, the number of folios not migrated, or -errno
    stats: MigrateStats
    failed: np.ndarray  # head pfns of folios left at the source


@dataclass
class _Ctx:
    target_nid: int
    reason: MigrateReason
    offload: Offload
    stats: MigrateStats


@dataclass
class _Unmapped:
    """Folios that are unmapped and have a destination: the kernel's
    ``unmap_folios`` / ``dst_folios`` lists, with the time each was unmapped
    (a scalar when all were unmapped at once)."""

    src: np.ndarray
    dst: np.ndarray
    t_unmap: np.ndarray | float
    nr_movable_ops: int

    def take(self, sel: np.ndarray) -> _Unmapped:
        t = self.t_unmap if np.isscalar(self.t_unmap) else self.t_unmap[sel]
        src = self.src[sel]
        return _Unmapped(src, self.dst[sel], t, -1 if self.nr_movable_ops else 0)


def do_pages_move_runs(heads: np.ndarray, nids: np.ndarray, nodes: np.ndarray
                       ) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each run of pages ``do_pages_move()`` hands to one
    ``migrate_pages()`` call: consecutive pages queued for the same node.

    Queued: the first page of its folio in the call, not on its node already.
    Any other page flushes the list (``move_pages_and_store_status()``), so
    runs never span it; an empty list makes no call.
    """
    n = heads.size
    first = np.zeros(n, dtype=np.bool_)
    first[np.unique(heads, return_index=True)[1]] = True
    queued = np.flatnonzero(first & (nids != nodes))
    if queued.size == 0:
        return []
    cut = np.flatnonzero((np.diff(queued) != 1) | (np.diff(nodes[queued]) != 0)) + 1
    starts = queued[np.concatenate([[0], cut])]
    ends = queued[np.concatenate([cut - 1, [queued.size - 1]])] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _merge_results(results: list[MigrateResult]) -> MigrateResult:
    """The calls of one ``move_pages()`` as one result (rc: the first error, else
    the folios not migrated)."""
    stats = MigrateStats()
    for r in results:
        for f in stats.__dataclass_fields__:
            setattr(stats, f, getattr(stats, f) + getattr(r.stats, f))
    errs = [r.rc for r in results if r.rc < 0]
    failed = np.concatenate([r.failed for r in results]) if results else _EMPTY
    return MigrateResult(errs[0] if errs else sum(r.rc for r in results), stats, failed)


class MigrationEngine:
    """The migration core: owns the counters, dispatches copies to the registry.

    Pure: no I/O and no logging.  Observers subscribe to :class:`BatchRecord`
    events and read :meth:`statistics` snapshots.
    """

    def __init__(self, machine: Machine, clock: Clock, profile: HardwareProfile,
                 registry: OffloadRegistry | None = None,
                 faults: FaultInjector | None = None) -> None:
        self.machine = machine
        self.memory = machine.memory
        self.clock = clock
        self.profile = profile
        self.registry = registry or OffloadRegistry()
        self.faults = faults or FaultInjector()
        mem = self.memory
        # What the compiled loops work on: free area, mem_map, page table.
        self._kernel_state = (mem.free_area.bitmap, mem.free_area.area, mem.mem_map,
                              machine.ptes)
        self._nr_max_batched_migration = NR_MAX_BATCHED_MIGRATION
        self._budget = BatchBudget(NR_MAX_BATCHED_MIGRATION_LIMIT)
        self._listeners: list[Callable[[BatchRecords], None]] = []
        self._vmstat = np.zeros((MR_TYPES, len(VMSTAT_ITEMS)), dtype=np.int64)
        self._folios: dict[tuple[str, str, bool], int] = {}
        self._bytes: dict[tuple[str, str, bool], int] = {}
        self._batches: dict[str, int] = {}
        self._fallbacks: dict[str, int] = {}
        self._cpu_copy_seconds: dict[str, float] = {}
        self._h_batch_pages = Histogram(PAGES_BUCKETS)
        self._h_first_folio = Histogram(SECONDS_BUCKETS)
        self._h_inaccessible = Histogram(SECONDS_BUCKETS)
        self._rows = np.zeros((4096, 8), dtype=np.int64)  # fast path's batch timings
        #: Set by :meth:`stop`: migrate_pages() stops at the next batch boundary
        #: and returns the folios it did not get to (intact at their source).
        self.stopping = False
        self._copy_scopes: set[trio.CancelScope] = set()
        #: Pages handed to migrate_pages() (after isolation), and those of calls
        #: still running: pgmigrate_success + pgmigrate_fail + in flight == attempted.
        self.pages_attempted = 0
        self.pages_in_flight = 0

    # -- knobs ------------------------------------------------------------------

    @property
    def nr_max_batched_migration(self) -> int:
        return self._nr_max_batched_migration

    @nr_max_batched_migration.setter
    def nr_max_batched_migration(self, value: int) -> None:
        if not 1 <= value <= NR_MAX_BATCHED_MIGRATION_LIMIT:
            raise ValueError(
                f"nr_max_batched_migration must be 1..{NR_MAX_BATCHED_MIGRATION_LIMIT}")
        self._nr_max_batched_migration = value

    @property
    def max_inaccessible_us(self) -> int:
        """The latency budget: 0, or the longest a folio may stay unmapped (us).

        When set, it replaces ``nr_max_batched_migration`` (and a migrator's
        own preference) as the batch bound: see :class:`BatchBudget`.
        """
        return self._budget.budget_us

    @max_inaccessible_us.setter
    def max_inaccessible_us(self, value: int) -> None:
        if not 0 <= value <= MAX_INACCESSIBLE_US_LIMIT:
            raise ValueError(f"max_inaccessible_us must be 0..{MAX_INACCESSIBLE_US_LIMIT}")
        self._budget.set_budget(value)

    def budget_statistics(self) -> BudgetStatistics:
        return self._budget.statistics()

    def batch_bound(self, offload: Offload) -> int:
        """Pages per batch: under a latency budget, the budget's; else the
        migrator's preference, bounded by the core."""
        if self._budget.budget_us:
            return self._budget.bound(offload.migrator.name, self._nr_max_batched_migration)
        want = offload.migrator.batch_pages(self._nr_max_batched_migration)
        return int(min(max(want, 1), NR_MAX_BATCHED_MIGRATION_LIMIT))

    def stop(self) -> None:
        """Shutdown: batches in flight finish, no new batch starts.

        Offloaded copies in flight are cancelled (the migrator terminates its
        channels) and their folios are copied by the CPU in the move loop, as
        after any offload failure; later batches of the calls in flight are
        not started.  Cancelling the callers instead was rejected: a batch
        torn between unmap and move would leave migration entries behind, and
        an injected DMA timeout can hold a batch for 10 s.
        """
        self.stopping = True
        for scope in list(self._copy_scopes):
            scope.cancel()

    # -- observers ----------------------------------------------------------------

    def subscribe(self, listener: Callable[[BatchRecords], None]) -> Callable[[], None]:
        """Call ``listener`` with the records of every batch, in groups
        (:class:`BatchRecords`); returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def statistics(self) -> EngineStatistics:
        """A frozen snapshot.  Safe from any thread: every mutable container is
        copied in one C-level step before it is looked at."""
        folios, nbytes = dict(self._folios), dict(self._bytes)

        def split(d: dict, ok: bool) -> dict:
            return {(m, r): v for (m, r, good), v in d.items() if good == ok}
        by_reason = {r.label: dict(zip(VMSTAT_ITEMS, self._vmstat[r].tolist(), strict=True))
                     for r in MigrateReason}
        return EngineStatistics(
            vmstat=dict(zip(VMSTAT_ITEMS, self._vmstat.sum(axis=0).tolist(), strict=True)),
            vmstat_by_reason=by_reason,
            folios_migrated=split(folios, True),
            folios_failed=split(folios, False),
            bytes_migrated=split(nbytes, True),
            bytes_failed=split(nbytes, False),
            batches=dict(self._batches),
            fallbacks=dict(self._fallbacks),
            cpu_copy_seconds=dict(self._cpu_copy_seconds),
            batch_pages=self._h_batch_pages.snapshot(),
            first_folio_seconds=self._h_first_folio.snapshot(),
            inaccessible_seconds=self._h_inaccessible.snapshot(),
            nr_max_batched_migration=self._nr_max_batched_migration,
        )

    # -- callers ---------------------------------------------------------------------

    async def move_pages(self, tenant, vpages: np.ndarray, nodes: int | np.ndarray,
                         reason: MigrateReason = MigrateReason.MR_SYSCALL) -> MigrateResult:
        """``move_pages(2)``: move the page at each of ``vpages`` to its node
        (``nodes``: one for all, or one per page).

        As ``do_pages_move()``: one ``migrate_pages()`` call (MIGRATE_SYNC,
        MR_SYSCALL) per run of consecutive pages queued for the same node.  A
        page that is not queued flushes the run before it: already on its node,
        or its folio already queued or moved by an earlier page of this call
        (-EBUSY from ``folio_isolate_lru()``), so one address per folio makes
        long runs and every base page of a THP makes one call per THP.
        """
        await self.clock.spend(self.profile.cpu.call_us * 1e-6)
        vpages = np.asarray(vpages)
        heads = self.memory.page_folio(tenant.pte_pfn[vpages])
        nodes = np.broadcast_to(np.asarray(nodes, dtype=np.int64), heads.shape)
        results = []
        for lo, hi in do_pages_move_runs(heads, self.memory.nid_of[heads], nodes):
            results.append(await self.migrate_pages(heads[lo:hi], int(nodes[lo]), reason,
                                                    MigrateMode.MIGRATE_SYNC))
        return _merge_results(results)

    # -- migrate_pages ---------------------------------------------------------------

    async def migrate_pages(self, folios: np.ndarray, target_nid: int, reason: MigrateReason,
                            mode: MigrateMode = MigrateMode.MIGRATE_ASYNC) -> MigrateResult:
        """Migrate ``folios`` (head pfns, in list order) to node ``target_nid``."""
        if not 0 <= target_nid < len(self.memory.nodes):
            raise ValueError(f"target node {target_nid} does not exist")
        folios = self.isolate_folios(np.ascontiguousarray(folios, dtype=np.int64))
        cum = np.cumsum(self.memory.folio_nr_pages(folios))  # running page count
        pages = int(cum[-1]) if cum.size else 0
        self.pages_attempted += pages
        self.pages_in_flight += pages
        stats = MigrateStats()
        failed: list[np.ndarray] = []
        try:
            rc = await self._migrate_pages(folios, cum, target_nid, reason, mode, stats,
                                           failed)
        finally:
            # Also when cancelled between batches: every page is accounted
            # for, and what stayed at the source leaves the list.
            left = np.concatenate(failed) if failed else _EMPTY
            self._vmstat[reason] += (stats.nr_succeeded, stats.nr_failed_pages,
                                     stats.nr_thp_succeeded, stats.nr_thp_failed,
                                     stats.nr_thp_split)
            self.putback_folios(left)
            self.pages_in_flight -= pages
        return MigrateResult(rc if left.size else 0, stats, left)

    def isolate_folios(self, folios: np.ndarray) -> np.ndarray:
        """``folio_isolate_lru()`` for a caller's list: the folios that are
        allocated heads and not already on another migration list, now marked
        PG_isolated.  The others are dropped, as a failed isolation drops them
        from the kernel's lists: a caller's pick may be stale by the time it
        calls (another caller migrated the folio meanwhile)."""
        out = np.empty(folios.size, dtype=np.int64)
        return out[:folio_isolate_batch(self.memory.mem_map, folios, out)]

    def putback_folios(self, folios: np.ndarray) -> None:
        """``putback_movable_pages()``: folios that did not migrate leave the list."""
        folio_putback_batch(self.memory.mem_map, folios)

    async def _migrate_pages(self, folios: np.ndarray, cum: np.ndarray, target_nid: int,
                             reason: MigrateReason, mode: MigrateMode, stats: MigrateStats,
                             failed: list[np.ndarray]) -> int:
        """The batch loop; returns rc.  Folios left at the source go to ``failed``.

        Batches are not cancellable (see :meth:`_migrate_pages_batch`): a
        cancellation arrives between batches, and the folios not yet tried
        then fail, intact.
        """
        rc_gather = 0
        n = folios.size
        dst = None  # the fast path's destination list, allocated on first use
        i = 0
        ctx = _Ctx(target_nid, reason, self.registry.active, stats)
        try:
            while i < n:
                if self.stopping:
                    break
                await trio.lowlevel.checkpoint_if_cancelled()  # batch boundary
                with self.registry.read_lock() as offload:
                    bound = self.batch_bound(offload)
                    ctx = _Ctx(target_nid, reason, offload, stats)
                    migrator = offload.migrator
                    fast = ((offload.reason_mask >> reason) & 1 and not self.clock.virtual
                            and not self.faults.armed)
                    threads = getattr(migrator, "cpu_threads", 0) if fast else 0
                    choice = None
                    if fast and migrator.auto:
                        # The automatic choice, made here so that the CPU way
                        # runs compiled like the default migrator's.
                        j = self._batch_end(cum, i, bound, crossing=True)
                        done = int(cum[i - 1]) if i else 0
                        choice = migrator.choose_way(j - i, int(cum[j - 1]) - done)
                        threads = migrator.fast_path_threads(choice[1])
                    if threads:
                        if dst is None:
                            dst = np.empty(n, dtype=np.int64)
                            scratch = np.empty(n, dtype=np.bool_)
                        declined = choice is not None and not choice[1]
                        j, rows = self._migrate_pages_batch_cpu(ctx, folios, cum, i, bound,
                                                                threads, dst, scratch, declined)
                        if j > i:
                            if choice is not None:
                                migrator.way_done(
                                    choice, float((rows[:, _k.T_END] - rows[:, _k.T_ENTRY])
                                                  .sum()) * 1e-9,
                                    int(rows[:, _k.NR_PAGES].sum()) * PAGE_SIZE)
                            i = j
                            await self.clock.yield_point()
                            continue
                    j = self._batch_end(cum, i, bound, crossing=not self._budget.budget_us)
                    batch, i = folios[i:j], j
                    if mode is MigrateMode.MIGRATE_ASYNC:
                        rc, left, split = await self._migrate_pages_batch(
                            ctx, batch, MigrateMode.MIGRATE_ASYNC, NR_MAX_MIGRATE_PAGES_RETRY)
                    else:
                        rc, left, split = await self._migrate_pages_sync(ctx, batch)
                    if left.size:
                        failed.append(left)
                    if rc < 0:
                        # Stopped (-ENOMEM): the split parts fail with the rest.
                        self._count_failed(ctx, split)
                        failed.append(split)
                        rc_gather = rc
                        break
                    if split.size:
                        # Split parts: one ASYNC pass; their failures are counted
                        # per page (the kernel counted the THP as one failure).
                        _, left, _ = await self._migrate_pages_batch(
                            ctx, split, MigrateMode.MIGRATE_ASYNC, 1, may_split=False)
                        failed.append(left)
                    rc_gather += rc
        finally:
            # Not tried (stopped, -ENOMEM, cancelled): failed, at the source.
            self._count_failed(ctx, folios[i:])
            failed.append(folios[i:])
        return rc_gather

    def _migrate_pages_batch_cpu(self, ctx: _Ctx, folios: np.ndarray, cum: np.ndarray,
                                 start: int, bound: int, threads: int,
                                 dst: np.ndarray, scratch: np.ndarray,
                                 declined: bool = False) -> tuple[int, np.ndarray]:
        """Clean batches for a CPU-copy migrator (cpu, mtcopy) in one compiled call.

        Same steps as :meth:`_migrate_pages_batch` (see
        ``_kernels.migrate_pages_batch_cpu``) without the ~50 us of Python
        control flow per batch, which for a 2 MiB folio is a quarter of its
        copy.  Returns the index of the next folio to migrate (``start`` when
        the first batch needs the general path) and the batches' timing rows.
        """
        mem = self.memory
        offset = trio.current_time() - time.perf_counter()
        deadline = time.perf_counter_ns() + _FAST_PATH_SLICE_NS
        if threads > 1:
            set_copy_threads(threads)
        j, nr_batches = _k.migrate_pages_batch_cpu(
            *self._kernel_state, mem.arena_base, mem.page_bytes, folios, cum, start,
            ctx.target_nid, bound, not self._budget.budget_us, deadline, threads, dst,
            scratch, self._rows)
        rows = self._rows[:nr_batches]
        if nr_batches:
            self._record_batches_cpu(ctx, rows, offset, threads, declined)
        return j, rows

    @staticmethod
    def _batch_end(cum: np.ndarray, i: int, bound: int, crossing: bool) -> int:
        """Where the batch starting at folio ``i`` ends (exclusive).

        ``crossing``: the batch ends with the folio that reaches the bound (the
        kernel's "nr_pages >= NR_MAX_BATCHED_MIGRATION" cut); else (under a
        latency budget) before a folio that would cross it, one folio at least.
        """
        done = int(cum[i - 1]) if i else 0
        if crossing:
            return min(int(cum.searchsorted(done + bound)) + 1, cum.size)
        return min(max(int(cum.searchsorted(done + bound, "right")), i + 1), cum.size)

    async def _migrate_pages_sync(self, ctx: _Ctx, batch: np.ndarray):
        """``migrate_pages_sync()``: one ASYNC batch, then folio by folio, SYNC."""
        astats = MigrateStats()
        rc, left, split = await self._migrate_pages_batch(
            _Ctx(ctx.target_nid, ctx.reason, ctx.offload, astats), batch,
            MigrateMode.MIGRATE_ASYNC, NR_MAX_MIGRATE_ASYNC_RETRY)
        s = ctx.stats
        s.nr_succeeded += astats.nr_succeeded
        s.nr_folios_succeeded += astats.nr_folios_succeeded
        s.nr_thp_succeeded += astats.nr_thp_succeeded
        s.nr_thp_split += astats.nr_thp_split
        s.nr_split += astats.nr_split
        if rc < 0:
            s.nr_failed_pages += astats.nr_failed_pages
            s.nr_folios_failed += astats.nr_folios_failed
            s.nr_thp_failed += astats.nr_thp_failed
            return rc, left, split
        s.nr_thp_failed += astats.nr_thp_split
        if left.size == 0:
            return astats.nr_split, left, split
        # Every failure is retried synchronously, one folio at a time; the
        # async attempt's failures are not counted (they are retried).  Its
        # per-migrator counts are taken back for the same reason.
        self._uncount_folios(ctx, astats)
        nr_failed = astats.nr_split
        still, splits = [], [split]
        for i, folio in enumerate(left.tolist()):
            rc, one, part = await self._migrate_pages_batch(
                ctx, np.array([folio], dtype=np.int64), MigrateMode.MIGRATE_SYNC,
                NR_MAX_MIGRATE_SYNC_RETRY)
            still.append(one)
            splits.append(part)
            if rc < 0:
                self._count_failed(ctx, left[i + 1:])
                still.append(left[i + 1:])
                return rc, np.concatenate(still), np.concatenate(splits)
            nr_failed += rc
        return nr_failed, np.concatenate(still), np.concatenate(splits)

    # -- migrate_pages_batch ------------------------------------------------------------

    async def _migrate_pages_batch(self, ctx: _Ctx, folios: np.ndarray, mode: MigrateMode,
                                   nr_pass: int, may_split: bool = True):
        """Returns ``(rc, left, split)``: rc as the kernel's, the folios that
        stay at the source, and the parts of folios split on -ENOMEM.

        Shielded from cancellation: between unmap and move the folios are
        reachable only through migration entries, and a batch ends in a move
        or an undo, never half-way.  Its only long wait, an offloaded copy,
        is cut short by :meth:`stop` instead.
        """
        with trio.CancelScope(shield=True):
            return await self._migrate_pages_batch_shielded(ctx, folios, mode, nr_pass,
                                                            may_split)

    async def _migrate_pages_batch_shielded(self, ctx: _Ctx, folios: np.ndarray,
                                            mode: MigrateMode, nr_pass: int, may_split: bool):
        t_entry = trio.current_time()
        nr_pages = int(self.memory.folio_nr_pages(folios).sum())
        nosplit = ctx.reason == MigrateReason.MR_NUMA_MISPLACED or not may_split
        todo, left, splits, rc_saved = await self._unmap_loop(ctx, folios, nr_pass, nosplit)
        nr_offloaded = nr_fallback = 0
        cause = None
        first_folio = None
        inaccessible: list[np.ndarray] = []
        if todo.src.size:
            await self.clock.spend(self.profile.cpu.flush_us * 1e-6)  # try_to_unmap_flush()
            nr_offloaded, nr_fallback, cause, batch = await self._batch_copy(ctx, todo)
            for _ in range(nr_pass):
                # folio_migrate_mapping(): someone took a reference -> -EAGAIN
                busy = self.memory.refcount[todo.src] != 1
                movable = todo.take(~busy) if busy.any() else todo
                if movable.src.size:
                    t_remap = await self._move(ctx, movable)
                    if first_folio is None:
                        first_folio = float(t_remap[0] - t_entry)
                    inaccessible.append(t_remap - movable.t_unmap)
                if not busy.any():
                    break
                todo = todo.take(busy)
            else:
                inaccessible.append(self._undo(todo) - todo.t_unmap)
                left = np.concatenate([left, todo.src])
            if batch is not None and batch.choice is not None:
                # the whole batch, as the compiled path's rows measure it
                ctx.offload.migrator.batch_done(batch, trio.current_time() - t_entry)
        if left.size:
            self._count_failed(ctx, left)
        nr_failed = int(left.size) + len(splits)
        split = np.concatenate(splits) if splits else _EMPTY
        self._record_batch(ctx, mode, folios.size, nr_pages, nr_failed, nr_offloaded,
                           nr_fallback, cause, t_entry, first_folio, inaccessible)
        return (rc_saved or nr_failed), left, split

    async def _unmap_loop(self, ctx: _Ctx, folios: np.ndarray, nr_pass: int, nosplit: bool):
        """The unmap loop with its passes.

        Returns ``(unmapped, left, split_parts, rc)``: what is unmapped, the
        folios that failed (-EAGAIN after every pass, or not tried after
        -ENOMEM), the parts of folios split on -ENOMEM, and -ENOMEM or 0.
        """
        pending = folios
        parts: list[_Unmapped] = []
        splits: list[np.ndarray] = []
        for _ in range(nr_pass):
            done, pending, split, stopped = await self._unmap_pass(ctx, pending, nosplit)
            if done.src.size:
                parts.append(done)
            splits += split
            if stopped is not None:
                # "When memory is low, don't bother to try to migrate other
                # folios, move unmapped folios, then exit."
                left = np.concatenate([np.array([stopped], dtype=np.int64), pending])
                return self._join(parts), left, splits, -errno.ENOMEM
            if pending.size == 0:
                break
        return self._join(parts), pending, splits, 0

    @staticmethod
    def _join(parts: list[_Unmapped]) -> _Unmapped:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return _Unmapped(_EMPTY, _EMPTY, 0.0, 0)
        return _Unmapped(
            np.concatenate([p.src for p in parts]), np.concatenate([p.dst for p in parts]),
            np.concatenate([np.broadcast_to(p.t_unmap, p.src.shape) for p in parts]),
            sum(p.nr_movable_ops for p in parts))

    async def _unmap_pass(self, ctx: _Ctx, pending: np.ndarray, nosplit: bool):
        """One pass of the unmap loop over ``pending``, in list order.

        Returns ``(unmapped, still_pending, split_parts, stopped_at)``;
        ``stopped_at`` is the folio whose allocation failed when migration
        must stop (-ENOMEM), else None.
        """
        mem = self.memory
        n = pending.size
        fail_alloc = self.faults["fail_migrate_alloc"].should_fail_many(n)
        result = np.full(n, _k.UNMAP_NOT_TRIED, dtype=np.int8)
        dst = np.empty(n, dtype=np.int64)
        split_parts: list[np.ndarray] = []
        stopped_at = None
        t0 = trio.current_time()
        first = nr_unmapped = nr_movable_ops = 0
        while True:
            i, unmapped, movable_ops = _k.migrate_folio_unmap_batch(
                *self._kernel_state, pending, fail_alloc, ctx.target_nid, first, result, dst)
            nr_unmapped += unmapped
            nr_movable_ops += movable_ops
            if i == n:
                break
            # -ENOMEM at folio i: split a large folio and go on, else stop.
            head = int(pending[i])
            order = int(mem.folio_order[head])
            splittable = (not mem.flags[head] & PG_locked
                          and mem.refcount[head] == 1 + mem.mapcount[head])  # try_split_folio()
            if order == 0 or nosplit or not splittable:
                stopped_at = head
                break
            split_parts.append(mem.split_folio(head))
            result[i] = _k.UNMAP_SPLIT
            is_thp = int(order == HPAGE_PMD_ORDER)
            ctx.stats.nr_thp_split += is_thp
            ctx.stats.nr_thp_failed += is_thp
            ctx.stats.nr_split += 1
            first = i + 1
        if nr_unmapped == n:
            src, still = pending, _EMPTY
        else:
            ok = result == _k.MIGRATEPAGE_UNMAP
            src, dst = pending[ok], dst[ok]
            still = pending[(result == _k.UNMAP_EAGAIN) | (result == _k.UNMAP_NOT_TRIED)]
            if stopped_at is not None:
                still = still[still != stopped_at]
        if self.clock.virtual:
            costs = self.profile.cpu.unmap_seconds(mem.folio_order[src])
            t_unmap = t0 + np.cumsum(costs)
            await self.clock.spend(float(costs.sum()))
        else:
            t_unmap = t0
            await self.clock.yield_point()  # mutators may now meet migration entries
        return _Unmapped(src, dst, t_unmap, nr_movable_ops), still, split_parts, stopped_at

    async def _batch_copy(self, ctx: _Ctx, todo: _Unmapped
                          ) -> tuple[int, int, str | None, CopyBatch | None]:
        """The RFC's batch copy of eligible folios through the active migrator.

        Eligible: reason in the migrator's mask, refcount as expected, not
        movable_ops.  Returns (offloaded, fell back, fallback cause, the batch
        handed to the migrator).
        """
        mem = self.memory
        offload = ctx.offload
        if not (offload.reason_mask >> ctx.reason) & 1:
            return 0, 0, None, None
        src, dst = todo.src, todo.dst
        if todo.nr_movable_ops:
            eligible = (mem.flags[src] & PG_movable_ops) == 0
            src, dst = src[eligible], dst[eligible]
            if src.size == 0:
                return 0, 0, None, None
        if offload.is_default:
            seconds = await folios_mc_copy(mem, src, dst, self.clock, self.profile)
            self._add_cpu_seconds("cpu", seconds)
            return int(src.size), 0, None, None
        if self.stopping:
            return 0, 0, None, None  # shutting down: the move loop copies on the CPU
        batch = CopyBatch(mem, src, dst, mem.folio_order[src], self.clock, self.profile)
        rc = -errno.EINTR  # stays so when stop() cancels the copy
        with trio.CancelScope() as scope:
            self._copy_scopes.add(scope)
            try:
                rc = await offload.migrator.migrate_offc(batch)
            except Exception:  # a migrator bug must not lose pages: the CPU copies
                rc = -errno.EIO
            finally:
                self._copy_scopes.discard(scope)
        missed = int(((mem.flags[src] & FOLIO_CONTENT_COPIED) == 0).sum())
        cause = None
        if missed:
            cause = errno_name(-rc) if rc < 0 else "incomplete"
            self._fallbacks[cause] = self._fallbacks.get(cause, 0) + missed
        return batch.nr_folios, missed, cause, batch

    async def _move(self, ctx: _Ctx, mv: _Unmapped) -> np.ndarray:
        """The move loop; returns each folio's remap time.

        The first folio is moved on its own so that its remap time is real
        (first-folio latency); the rest follow in one compiled loop.
        """
        mem = self.memory
        virtual = self.clock.virtual
        times = []
        for part in ((slice(None),) if mv.src.size == 1 else (slice(0, 1), slice(1, None))):
            s, d = mv.src[part], mv.dst[part]
            costs = None
            if virtual:  # charge before remapping: the time passes, then the PTEs change
                orders = mem.folio_order[s]
                copy = (mem.flags[s] & FOLIO_CONTENT_COPIED) == 0
                cpu_copy = np.where(copy, self.profile.cpu.copy_seconds(orders), 0.0)
                costs = self.profile.cpu.move_seconds(orders) + cpu_copy
                self._add_cpu_seconds("cpu", float(cpu_copy.sum()))
                t0 = trio.current_time()
                await self.clock.spend(float(costs.sum()))
            start = time.perf_counter()
            copied = np.empty(s.size, dtype=np.bool_)
            nr_pages, nr_thp, nr_copied = _k.migrate_folio_move_batch(
                *self._kernel_state, mem.arena_base, mem.page_bytes, s, d, copied)
            if nr_copied and not virtual:
                self._add_cpu_seconds("cpu", time.perf_counter() - start)
            self.machine.wake_remapped()
            times.append(t0 + np.cumsum(costs) if virtual
                         else np.full(s.size, trio.current_time()))
            st = ctx.stats
            st.nr_succeeded += nr_pages
            st.nr_folios_succeeded += int(s.size)
            st.nr_thp_succeeded += nr_thp
            self._count_folios(ctx, int(s.size), nr_pages, True)
        return times[0] if len(times) == 1 else np.concatenate(times)

    def _undo(self, todo: _Unmapped) -> np.ndarray:
        """``migrate_folio_undo_src()`` / ``_dst()``: remap the source, free the dst."""
        _k.migrate_folio_undo_batch(*self._kernel_state, todo.src, todo.dst)
        self.machine.wake_remapped()
        return np.full(todo.src.size, trio.current_time())

    # -- accounting ----------------------------------------------------------------------

    def _count_failed(self, ctx: _Ctx, heads: np.ndarray) -> None:
        if heads.size == 0:
            return
        o = self.memory.folio_order[heads]
        nr_pages = int(np.left_shift(1, o.astype(np.int64)).sum())
        ctx.stats.nr_failed_pages += nr_pages
        ctx.stats.nr_folios_failed += int(heads.size)
        ctx.stats.nr_thp_failed += int((o == HPAGE_PMD_ORDER).sum())
        self._count_folios(ctx, int(heads.size), nr_pages, False)

    def _count_folios(self, ctx: _Ctx, nr_folios: int, nr_pages: int, ok: bool) -> None:
        key = (ctx.offload.migrator.name, ctx.reason.label, ok)
        self._folios[key] = self._folios.get(key, 0) + nr_folios
        self._bytes[key] = self._bytes.get(key, 0) + nr_pages * PAGE_SIZE

    def _uncount_folios(self, ctx: _Ctx, s: MigrateStats) -> None:
        """Take back the failures of a pass whose failures are retried."""
        self._count_folios(ctx, -s.nr_folios_failed, -s.nr_failed_pages, False)

    def _add_cpu_seconds(self, who: str, seconds: float) -> None:
        self._cpu_copy_seconds[who] = self._cpu_copy_seconds.get(who, 0.0) + seconds

    def _record_batches_cpu(self, ctx: _Ctx, rows: np.ndarray, offset: float, threads: int,
                            declined: bool) -> None:
        """Accounting and records of the batches the CPU fast path ran
        (``declined``: by the automatic choice of a migrator, as a fallback)."""
        t = rows[:, :_k.NR_FOLIOS] * 1e-9 + offset  # trio time
        nr_folios = rows[:, _k.NR_FOLIOS]
        nr_pages = rows[:, _k.NR_PAGES]
        total_folios, total_pages = int(nr_folios.sum()), int(nr_pages.sum())
        st = ctx.stats
        st.nr_succeeded += total_pages
        st.nr_folios_succeeded += total_folios
        st.nr_thp_succeeded += int(rows[:, _k.NR_THP].sum())
        self._count_folios(ctx, total_folios, total_pages, True)
        name = ctx.offload.migrator.name
        self._batches[name] = self._batches.get(name, 0) + len(rows)
        copy = float((t[:, _k.T_COPIED] - t[:, _k.T_UNMAPPED]).sum())
        self._add_cpu_seconds("cpu" if declined else name,
                              copy * min(threads, numba.config.NUMBA_NUM_THREADS))
        cause, fallback = None, np.zeros(len(rows), dtype=np.int64)
        if declined:
            cause, fallback = "EOPNOTSUPP", nr_folios
            self._fallbacks[cause] = self._fallbacks.get(cause, 0) + total_folios
        entry, first, end = t[:, _k.T_ENTRY], t[:, _k.T_FIRST], t[:, _k.T_END]
        # Every folio was unmapped at entry; the first is remapped at T_FIRST,
        # the others at the end of the move loop.
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(nr_folios, out=offsets[1:])
        inacc = np.repeat(end - entry, nr_folios)
        inacc[offsets[:-1]] = first - entry
        self.machine.wake_remapped()
        zeros = np.zeros(len(rows), dtype=np.int64)
        self._emit(BatchRecords(
            ctx.reason.label, name, MigrateMode.MIGRATE_ASYNC.value, ctx.target_nid, cause,
            nr_folios, nr_pages, zeros, nr_folios, fallback, entry, end, first - entry,
            inacc, offsets))

    def _emit(self, records: BatchRecords) -> None:
        self._h_batch_pages.observe_many(records.nr_pages.astype(np.float64))
        ff = records.first_folio_seconds
        self._h_first_folio.observe_many(ff[ff == ff])
        self._h_inaccessible.observe_many(records.inaccessible_seconds)
        if self._budget.budget_us:
            self._budget.observe(records.migrator, records.nr_folios, records.nr_pages,
                                 records.longest_inaccessible())
        for listener in list(self._listeners):
            listener(records)

    def _record_batch(self, ctx, mode, nr_folios, nr_pages, nr_failed, nr_offloaded,
                      nr_fallback, cause, t_entry, first_folio, inaccessible) -> None:
        name = ctx.offload.migrator.name
        self._batches[name] = self._batches.get(name, 0) + 1
        inacc = (inaccessible[0] if len(inaccessible) == 1 else
                 np.concatenate(inaccessible) if inaccessible else np.empty(0))
        one = np.array
        self._emit(BatchRecords(
            ctx.reason.label, name, mode.value, ctx.target_nid, cause, one([nr_folios]),
            one([nr_pages]), one([nr_failed]), one([nr_offloaded]), one([nr_fallback]),
            one([t_entry]), one([trio.current_time()]),
            one([np.nan if first_folio is None else first_folio]), inacc,
            one([0, inacc.size])))
