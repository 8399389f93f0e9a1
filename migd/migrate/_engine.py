"""``migrate_pages()`` and ``migrate_pages_batch()`` (mm/migrate.c) on arrays of folios.

The control flow is the kernel's: cut the list into batches; per batch an unmap
loop (allocate the destination, lock, install migration entries) with retry
passes, one batched TLB flush (``try_to_unmap_flush()``), the batch copy when
``migrate_should_offload()`` holds (``_batch``), a move loop
(``migrate_folio_move()``: ``move_to_new_folio()`` copies each folio not yet
copied with ``folio_mc_copy()``, remaps it and unlocks it before it touches the
next) and the undo of whatever is left.  With no migrator the move loop does
every copy: folio 0 is remapped before folio 1 is copied.

Here: the call (isolation, the batch loop, -ENOMEM, the call's books) and the
engine's knobs and observers.  Elsewhere: one batch (``_migrate_batch``:
``migrate_pages_batch()``, ``migrate_pages_sync()``) and its steps
(``_steps``); the per-folio loops, compiled (``_kernels``); whole clean
batches run compiled on the real clock (``_fastpath``) or in closed form on
the virtual one (``_vclock``); ``move_pages(2)``'s caller (``_move_pages``);
the counters, records and listeners (``_stats.EngineBooks``).

Accounting as the kernel's: when a destination allocation fails and migration
stops (``-ENOMEM``), the folios never tried are counted neither as success nor
as failure; migd keeps them as ``untried`` so that success + fail + untried =
the pages handed in.  A call cut short by :meth:`MigrationEngine.stop` or a
cancellation (no kernel analogue) fails its untried folios, intact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import trio

from ..faults import FaultInjector
from ..hw import Clock, HardwareProfile
from ..mm import (
    NR_MAX_BATCHED_MIGRATION,
    NR_MAX_BATCHED_MIGRATION_LIMIT,
    Machine,
    MigrateMode,
    MigrateReason,
    folio_isolate_batch,
    folio_putback_batch,
)
from ..offload import CpuMigrator, Migrator, Offload, OffloadRegistry
from . import _kernels as _k
from ._auto import OffloadChooser
from ._budget import BatchBudget, BudgetStatistics
from ._fastpath import FastPath
from ._migrate_batch import (
    NR_MAX_MIGRATE_PAGES_RETRY,
    BatchResult,
    Ctx,
    migrate_pages_batch,
    migrate_pages_sync,
)
from ._move_pages import do_pages_move
from ._stats import (
    NO_FOLIOS,
    BatchRecords,
    EngineBooks,
    EngineStatistics,
    MigrateCall,
    MigrateResult,
    MigrateStats,
    MigratorError,
)
from ._steps import count_failed, count_untried
from ._way import ALL_PATHS, Path, batch_way, should_offload

MAX_INACCESSIBLE_US_LIMIT = 10_000_000  # the budget knob's bound: 10 s

class MigrationEngine:
    """The migration core: runs ``migrate_pages()``, dispatches batch copies.

    Pure: no I/O and no logging.  Observers subscribe to :class:`BatchRecords`
    and to :class:`MigratorError` and read :meth:`statistics` snapshots.
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
        #: What the compiled loops work on: free area, mem_map, page table.
        self.kernel_state = (mem.free_area.bitmap, mem.free_area.area, mem.mem_map,
                             machine.ptes)
        self._nr_max_batched_migration = NR_MAX_BATCHED_MIGRATION
        self._budget = BatchBudget(NR_MAX_BATCHED_MIGRATION_LIMIT)
        self.books = EngineBooks(self._budget)
        self.fast = FastPath(self)
        #: Set by :meth:`stop`: migrate_pages() stops at the next batch boundary
        #: and returns the folios it did not get to (intact at their source).
        self.stopping = False
        #: Offloaded copies in flight, cancelled by :meth:`stop`.
        self.copy_scopes: set[trio.CancelScope] = set()
        #: ``migrate_pages()`` calls in flight: with more than one, batches
        #: can interleave and the virtual clock runs them step by step.
        self.calls_in_flight = 0
        #: Batches the virtual clock ran in closed form (``_vclock``).
        self.closed_form_batches = 0
        #: The paths a batch may take (``_way.batch_way``); a test narrows it
        #: to run the same lists every way.
        self.paths: frozenset[Path] = ALL_PATHS
        #: ``kernel/mm/migrate_offload/batch_copy`` (``_way.BATCH_COPY_MODES``).
        self.batch_copy = "gated"
        #: ``kernel/mm/migrate_offload/decline_latency_sensitive``: the active
        #: migrator declines the batches of latency-sensitive callers.
        self.decline_latency_sensitive = False

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

    def batch_bound(self, offload: Offload, reason: MigrateReason) -> int:
        """Pages per batch: under a latency budget, the budget's; else the
        migrator's preference for the reasons it takes, bounded by the core;
        every other reason is cut at ``nr_max_batched_migration`` as the
        vanilla kernel's NR_MAX_BATCHED_MIGRATION."""
        taken = should_offload(offload, reason)
        if self._budget.budget_us:
            name = offload.migrator.name if taken else CpuMigrator.name
            return self._budget.bound(name, self._nr_max_batched_migration)
        if not taken:
            return self._nr_max_batched_migration
        want = offload.migrator.batch_pages(self._nr_max_batched_migration)
        return int(min(max(want, 1), NR_MAX_BATCHED_MIGRATION_LIMIT))

    def chooser(self, migrator: Migrator) -> OffloadChooser:
        """The automatic CPU/offload choice's estimates for ``migrator``."""
        return self.fast.chooser(migrator)

    def stop(self) -> None:
        """Shutdown: batches in flight finish, no new batch starts.

        Offloaded copies in flight are cancelled (the migrator terminates its
        channels) and their folios are copied by the CPU in the move loop, as
        after any offload failure; sync-mode waits for a folio lock give up;
        later batches of the calls in flight are not started.  Cancelling the
        callers instead was rejected: a batch torn between unmap and move would
        leave migration entries behind, and an injected DMA timeout can hold a
        batch for 10 s.
        """
        self.stopping = True
        for scope in list(self.copy_scopes):
            scope.cancel()
        self.machine.wake_remapped()

    # -- observers ----------------------------------------------------------------

    def subscribe(self, listener: Callable[[BatchRecords], None]) -> Callable[[], None]:
        """Call ``listener`` with the records of every batch, in groups
        (:class:`BatchRecords`); returns the unsubscribe function."""
        return self.books.subscribe(listener)

    def subscribe_errors(self, listener: Callable[[MigratorError], None]
                         ) -> Callable[[], None]:
        """Call ``listener`` with every exception a migrator raised (its batch
        fell back to the CPU); returns the unsubscribe function."""
        return self.books.subscribe_errors(listener)

    def subscribe_calls(self, listener: Callable[[MigrateCall], None]) -> Callable[[], None]:
        """Call ``listener`` at the start and the end of every ``migrate_pages()``
        (:class:`MigrateCall`, where mm/migrate.c has its two tracepoints);
        returns the unsubscribe function."""
        return self.books.subscribe_calls(listener)

    def statistics(self) -> EngineStatistics:
        """A frozen snapshot; safe from any thread."""
        return self.books.statistics(self._nr_max_batched_migration)

    @property
    def pages_attempted(self) -> int:
        """Pages handed to migrate_pages() (after isolation)."""
        return self.books.pages_attempted

    @property
    def pages_in_flight(self) -> int:
        return self.books.pages_in_flight

    @property
    def pages_untried(self) -> int:
        return self.books.pages_untried

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
        return await do_pages_move(self, tenant, vpages, nodes, reason)

    # -- migrate_pages ---------------------------------------------------------------

    async def migrate_pages(self, folios: np.ndarray, target_nid: int, reason: MigrateReason,
                            mode: MigrateMode = MigrateMode.MIGRATE_ASYNC, *,
                            memalloc: bool = False,
                            alloc_fails: np.ndarray | None = None) -> MigrateResult:
        """``migrate_pages()``: migrate ``folios`` (head pfns, in list order) to
        node ``target_nid``.  ``memalloc``: the caller runs PF_MEMALLOC (direct
        compaction), so no folio lock is slept on.  ``alloc_fails``: large
        folios (heads) for which the caller's ``get_new_folio()`` returns NULL:
        -ENOMEM, so they are split and their parts tried (replay's rebuild of
        a traced THP split); their batches take the general path."""
        if not 0 <= target_nid < len(self.memory.nodes):
            raise ValueError(f"target node {target_nid} does not exist")
        folios = self.isolate_folios(np.ascontiguousarray(folios, dtype=np.int64))
        # The kernel's callers isolate first and call with what they isolated;
        # nothing isolated, no call (and none of its two tracepoints).
        traced = folios.size > 0
        if traced:
            self.books.emit_call(MigrateCall.of(False, trio.current_time(), mode, reason))
        cum = np.cumsum(self.memory.folio_nr_pages(folios))  # running page count
        pages = int(cum[-1]) if cum.size else 0
        books = self.books
        books.pages_attempted += pages
        books.pages_in_flight += pages
        books.add_call(mode.value)
        stats = MigrateStats()
        failed: list[np.ndarray] = []
        self.calls_in_flight += 1
        try:
            if alloc_fails is not None:
                alloc_fails = np.sort(np.asarray(alloc_fails, dtype=np.int64))
            rc = await self._migrate_pages(folios, cum, target_nid, reason, mode, stats,
                                           failed, memalloc, alloc_fails)
        finally:
            self.calls_in_flight -= 1
            # Also when cancelled between batches: every page is accounted
            # for, and what stayed at the source leaves the list.
            left = np.concatenate(failed) if failed else NO_FOLIOS
            books.vmstat[reason] += (stats.nr_succeeded, stats.nr_failed_pages,
                                     stats.nr_thp_succeeded, stats.nr_thp_failed,
                                     stats.nr_thp_split)
            books.pages_untried += stats.nr_untried_pages
            self.putback_folios(left)
            books.pages_in_flight -= pages
            if traced:
                books.emit_call(MigrateCall.of(True, trio.current_time(), mode, reason, stats))
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
                             failed: list[np.ndarray], memalloc: bool = False,
                             alloc_fails: np.ndarray | None = None) -> int:
        """The batch loop of ``migrate_pages()``; returns rc.  Folios left at
        the source go to ``failed``.

        Batches are not cancellable (see :func:`migrate_pages_batch`): a
        cancellation arrives between batches, and the folios not yet tried
        then fail, intact.  -ENOMEM ends the call: the folios after it, and
        the parts of a folio split for it, are not tried (nor counted failed).
        """
        rc_gather = 0
        n = folios.size
        dst = scratch = times = None  # the fast path's arrays, made on first use
        crossing = not self._budget.budget_us
        i = 0
        ctx = Ctx(target_nid, reason, self.registry.active, stats, mode, None, memalloc,
                  alloc_fails)
        try:
            while i < n:
                if self.stopping:
                    break
                await trio.lowlevel.checkpoint_if_cancelled()  # batch boundary
                with self.registry.read_lock() as offload:
                    bound = self.batch_bound(offload, reason)
                    way = batch_way(self, offload, reason, cum, i, bound)
                    if alloc_fails is not None and alloc_fails.size:
                        way = way.general()  # only the step path splits
                    ctx = Ctx(target_nid, reason, offload, stats, mode, way, memalloc,
                              alloc_fails, pos=i)
                    if way.path is Path.COMPILED:
                        if dst is None:
                            dst = np.empty(n, dtype=np.int64)
                            scratch = np.empty(n, dtype=np.bool_)
                            times = np.empty((2, n), dtype=np.int64)
                        j = self.fast.run(ctx, way, folios, cum, i, bound, crossing,
                                          dst, scratch, times)
                        if j > i:
                            i = j
                            await self.clock.yield_point()
                            continue
                        ctx = replace(ctx, way=way.general())
                    j = int(_k.batch_end(cum, i, bound, crossing))
                    batch, i = folios[i:j], j
                    if mode is MigrateMode.MIGRATE_ASYNC:
                        b = await migrate_pages_batch(self, ctx, batch, mode,
                                                      NR_MAX_MIGRATE_PAGES_RETRY)
                    else:
                        b = await migrate_pages_sync(self, ctx, batch, failed)
                    failed += (b.left, b.untried)
                    if b.rc >= 0 and b.split.size:
                        # Split parts: one ASYNC pass; their failures are counted
                        # per page (the kernel counted the THP as one failure).
                        # Its return is ignored, -ENOMEM included: the kernel
                        # goes on with the rest of the list.
                        rc = b.rc
                        s = await migrate_pages_batch(
                            self, ctx, b.split, MigrateMode.MIGRATE_ASYNC, 1, may_split=False)
                        failed += (s.left, s.untried)
                        b = BatchResult(rc, NO_FOLIOS, NO_FOLIOS, NO_FOLIOS)
                    if b.rc < 0:
                        # "When memory is low, don't bother to try to migrate
                        # other folios": the split parts and the rest stay untried.
                        count_untried(self, ctx, b.split)
                        count_untried(self, ctx, folios[i:])
                        failed += (b.split, folios[i:])
                        i = n
                        rc_gather = b.rc
                        break
                    rc_gather += b.rc
        finally:
            # Not tried (stopped, cancelled): failed, at the source.
            count_failed(self, ctx, folios[i:], outside_batch=True)
            failed.append(folios[i:])
        return rc_gather
