"""``migrate_pages()`` and ``migrate_pages_batch()`` (mm/migrate.c) on arrays of folios.

The control flow is the kernel's: cut the list into batches; per batch an unmap
loop (allocate the destination, lock, install migration entries) with retry
passes, one batched TLB flush, the batch copy through the active migrator, a
move loop (copy what is not yet copied, remap, unlock, free the source) and the
undo of whatever is left.  The difference is granularity: each step handles all
folios of the batch with a few numpy operations instead of a loop per folio,
and falls back to per-folio handling only on rare paths (allocation failure).

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
from dataclasses import dataclass, replace

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
from ..offload import CopyBatch, Offload, OffloadRegistry, folios_mc_copy
from ._stats import (
    PAGES_BUCKETS,
    SECONDS_BUCKETS,
    VMSTAT_ITEMS,
    BatchRecord,
    EngineStatistics,
    Histogram,
    MigrateStats,
)

NR_MAX_BATCHED_MIGRATION = 512  # HPAGE_PMD_NR
NR_MAX_BATCHED_MIGRATION_LIMIT = 262144  # the knob's bound: 1 GiB of base pages
NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY

_NOT_COPIED = ~np.uint16(FOLIO_CONTENT_COPIED)
_UNLOCK = ~np.uint16(PG_locked)
_EMPTY = np.empty(0, dtype=np.int64)


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
    ``unmap_folios`` / ``dst_folios`` lists, with the time each was unmapped."""

    src: np.ndarray
    dst: np.ndarray
    orders: np.ndarray
    t_unmap: np.ndarray

    def take(self, sel) -> _Unmapped:
        return _Unmapped(self.src[sel], self.dst[sel], self.orders[sel], self.t_unmap[sel])

    @staticmethod
    def concat(parts: list[_Unmapped]) -> _Unmapped:
        if not parts:
            return _Unmapped(_EMPTY, _EMPTY, np.empty(0, np.int8), np.empty(0))
        return _Unmapped(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ("src", "dst", "orders", "t_unmap")))


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
        self._nr_max_batched_migration = NR_MAX_BATCHED_MIGRATION
        self._listeners: list[Callable[[BatchRecord], None]] = []
        self._vmstat = np.zeros((MR_TYPES, len(VMSTAT_ITEMS)), dtype=np.int64)
        self._folios: dict[tuple[str, str, bool], int] = {}
        self._bytes: dict[tuple[str, str, bool], int] = {}
        self._batches: dict[str, int] = {}
        self._fallbacks: dict[str, int] = {}
        self._cpu_copy_seconds: dict[str, float] = {}
        self._h_batch_pages = Histogram(PAGES_BUCKETS)
        self._h_first_folio = Histogram(SECONDS_BUCKETS)
        self._h_inaccessible = Histogram(SECONDS_BUCKETS)

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

    def batch_bound(self, offload: Offload) -> int:
        """Pages per batch: the migrator's preference, bounded by the core."""
        want = offload.migrator.batch_pages(self._nr_max_batched_migration)
        return int(min(max(want, 1), NR_MAX_BATCHED_MIGRATION_LIMIT))

    # -- observers ----------------------------------------------------------------

    def subscribe(self, listener: Callable[[BatchRecord], None]) -> Callable[[], None]:
        """Call ``listener`` with every BatchRecord; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def statistics(self) -> EngineStatistics:
        def split(d: dict, ok: bool) -> dict:
            return {(m, r): v for (m, r, good), v in d.items() if good == ok}
        by_reason = {r.label: dict(zip(VMSTAT_ITEMS, self._vmstat[r].tolist(), strict=True))
                     for r in MigrateReason}
        return EngineStatistics(
            vmstat=dict(zip(VMSTAT_ITEMS, self._vmstat.sum(axis=0).tolist(), strict=True)),
            vmstat_by_reason=by_reason,
            folios_migrated=split(self._folios, True),
            folios_failed=split(self._folios, False),
            bytes_migrated=split(self._bytes, True),
            bytes_failed=split(self._bytes, False),
            batches=dict(self._batches),
            fallbacks=dict(self._fallbacks),
            cpu_copy_seconds=dict(self._cpu_copy_seconds),
            batch_pages=self._h_batch_pages.snapshot(),
            first_folio_seconds=self._h_first_folio.snapshot(),
            inaccessible_seconds=self._h_inaccessible.snapshot(),
            nr_max_batched_migration=self._nr_max_batched_migration,
        )

    # -- callers ---------------------------------------------------------------------

    async def move_pages(self, tenant, vpages: np.ndarray, target_nid: int,
                         reason: MigrateReason = MigrateReason.MR_SYSCALL) -> MigrateResult:
        """``move_pages(2)``: migrate the folios backing ``vpages`` to ``target_nid``.

        Folios already on the target are skipped, as ``add_page_for_migration``
        does.  Uses MIGRATE_SYNC like the syscall.
        """
        await self.clock.spend(self.profile.cpu.call_us * 1e-6)
        pfns = tenant.pte_pfn[np.asarray(vpages)]
        heads = self.memory.page_folio(pfns)
        heads = heads[np.sort(np.unique(heads, return_index=True)[1])]
        heads = heads[self.memory.nid_of[heads] != target_nid]
        return await self.migrate_pages(heads, target_nid, reason, MigrateMode.MIGRATE_SYNC)

    # -- migrate_pages ---------------------------------------------------------------

    async def migrate_pages(self, folios: np.ndarray, target_nid: int, reason: MigrateReason,
                            mode: MigrateMode = MigrateMode.MIGRATE_ASYNC) -> MigrateResult:
        """Migrate ``folios`` (head pfns, in list order) to node ``target_nid``."""
        if not 0 <= target_nid < len(self.memory.nodes):
            raise ValueError(f"target node {target_nid} does not exist")
        rest = np.asarray(folios, dtype=np.int64)
        if (self.memory.folio_order[rest] < 0).any():
            raise ValueError("migrate_pages() of a page that is not an allocated folio")
        stats = MigrateStats()
        failed: list[np.ndarray] = []
        rc_gather = 0
        cum = np.cumsum(self.memory.folio_nr_pages(rest))
        done_pages = 0
        while rest.size:
            with self.registry.read_lock() as offload:
                # The batch ends with the folio that reaches the bound (the
                # kernel's "nr_pages >= NR_MAX_BATCHED_MIGRATION" cut).
                bound = self.batch_bound(offload)
                n = min(int(np.searchsorted(cum, done_pages + bound)) + 1, rest.size)
                done_pages = int(cum[n - 1])
                cum = cum[n:]
                batch, rest = rest[:n], rest[n:]
                ctx = _Ctx(target_nid, reason, offload, stats)
                if mode is MigrateMode.MIGRATE_ASYNC:
                    rc, left, split = await self._migrate_pages_batch(
                        ctx, batch, MigrateMode.MIGRATE_ASYNC, NR_MAX_MIGRATE_PAGES_RETRY)
                else:
                    rc, left, split = await self._migrate_pages_sync(ctx, batch)
                failed.append(left)
                if rc < 0:
                    # Stopped (-ENOMEM): what was never tried fails too.
                    self._count_failed(ctx, np.concatenate([split, rest]))
                    failed += [split, rest]
                    rc_gather = rc
                    break
                if split.size:
                    # Split parts: one ASYNC pass; their failures are counted
                    # per page (the kernel counted the THP as one failure).
                    _, left, _ = await self._migrate_pages_batch(
                        ctx, split, MigrateMode.MIGRATE_ASYNC, 1, may_split=False)
                    failed.append(left)
                rc_gather += rc
        left = np.concatenate(failed) if failed else _EMPTY
        if left.size == 0:
            rc_gather = 0
        self._count_vm_events(reason, stats)
        return MigrateResult(rc_gather, stats, left)

    async def _migrate_pages_sync(self, ctx: _Ctx, batch: np.ndarray):
        """``migrate_pages_sync()``: one ASYNC batch, then folio by folio, SYNC."""
        astats = MigrateStats()
        rc, left, split = await self._migrate_pages_batch(
            replace(ctx, stats=astats), batch, MigrateMode.MIGRATE_ASYNC,
            NR_MAX_MIGRATE_ASYNC_RETRY)
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
        nr_failed = astats.nr_split
        # Every failure is retried synchronously, one folio at a time; the
        # async attempt's failures are not counted (they are retried).
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
        return (nr_failed, np.concatenate(still) if still else _EMPTY,
                np.concatenate(splits))

    # -- migrate_pages_batch ------------------------------------------------------------

    async def _migrate_pages_batch(self, ctx: _Ctx, folios: np.ndarray, mode: MigrateMode,
                                   nr_pass: int, may_split: bool = True):
        """Returns ``(rc, left, split)``: rc as the kernel's, the folios that
        stay at the source, and the parts of folios split on -ENOMEM."""
        mem = self.memory
        t_entry = trio.current_time()
        nr_pages = int(mem.folio_nr_pages(folios).sum())
        nosplit = ctx.reason == MigrateReason.MR_NUMA_MISPLACED or not may_split
        pending = folios
        unmapped: list[_Unmapped] = []
        splits: list[np.ndarray] = []
        failed: list[np.ndarray] = []
        rc_saved = 0
        for _ in range(nr_pass):
            if pending.size == 0:
                break
            done, pending, split, stop = await self._unmap_pass(ctx, pending, nosplit)
            unmapped.append(done)
            splits += split
            if stop is not None:
                # "When memory is low, don't bother to try to migrate other
                # folios, move unmapped folios, then exit."
                failed.append(np.concatenate([[stop], pending]).astype(np.int64))
                pending = _EMPTY
                rc_saved = -errno.ENOMEM
                break
        failed.append(pending)  # -EAGAIN after every pass
        todo = _Unmapped.concat(unmapped)
        nr_offloaded = nr_fallback = 0
        cause = None
        moved_times: list[np.ndarray] = []
        first_folio = None
        if todo.src.size:
            await self.clock.spend(self.profile.cpu.flush_us * 1e-6)  # try_to_unmap_flush()
            nr_offloaded, nr_fallback, cause = await self._batch_copy(ctx, todo)
            for _ in range(nr_pass):
                # folio_migrate_mapping(): someone took a reference -> -EAGAIN
                busy = mem.refcount[todo.src] != 1
                movable = todo.take(~busy)
                if movable.src.size:
                    t_remap = await self._move(ctx, movable)
                    if first_folio is None:
                        first_folio = t_remap[0] - t_entry
                    moved_times.append(t_remap - movable.t_unmap)
                todo = todo.take(busy)
                if todo.src.size == 0:
                    break
            if todo.src.size:
                moved_times.append(self._undo(todo) - todo.t_unmap)
                failed.append(todo.src)
        left = np.concatenate(failed) if failed else _EMPTY
        self._count_failed(ctx, left)
        nr_failed = int(left.size) + len(splits)
        split = np.concatenate(splits) if splits else _EMPTY
        self._record_batch(ctx, mode, folios.size, nr_pages, nr_failed, nr_offloaded,
                           nr_fallback, cause, t_entry, first_folio, moved_times)
        return (rc_saved or nr_failed), left, split

    async def _unmap_pass(self, ctx: _Ctx, pending: np.ndarray, nosplit: bool):
        """One pass of the unmap loop over ``pending``, in list order.

        Returns ``(unmapped, still_pending, split_parts, stopped_at)``;
        ``stopped_at`` is the folio whose allocation failed when migration
        must stop (-ENOMEM), else None.
        """
        mem = self.memory
        n = pending.size
        orders = mem.folio_order[pending]
        # get_new_folio(): allocate destinations in list order.
        dst = np.full(n, -1, dtype=np.int64)
        can = ~self.faults["fail_migrate_alloc"].should_fail_many(n)
        if orders.min() == orders.max():
            groups = [(int(orders[0]), np.flatnonzero(can))]
        else:
            groups = [(int(o), np.flatnonzero(can & (orders == o))) for o in np.unique(orders)]
        for order, sel in groups:
            got = mem.folio_alloc(ctx.target_nid, order, sel.size)
            dst[sel[:got.size]] = got
        stop = n
        split_parts: list[np.ndarray] = []
        split_mask = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(dst < 0).tolist():  # -ENOMEM, rare
            # try_split_folio(): refused for a locked or pinned folio
            splittable = (not mem.flags[pending[i]] & PG_locked
                          and mem.refcount[pending[i]] == 1 + mem.mapcount[pending[i]])
            if orders[i] > 0 and not nosplit and splittable:
                head = int(pending[i])
                split_parts.append(mem.split_folio(head))
                split_mask[i] = True
                is_thp = int(orders[i] == HPAGE_PMD_ORDER)
                ctx.stats.nr_thp_split += is_thp
                ctx.stats.nr_thp_failed += is_thp
                ctx.stats.nr_split += 1
                continue
            stop = i
            break
        tried = np.arange(n) < stop
        if stop < n:
            give_back = (~tried) & (dst >= 0)
            mem.folio_put(dst[give_back])
            dst[give_back] = -1
        # Locked by someone else, or pinned (try_to_migrate() cannot unmap a
        # maybe-DMA-pinned anon page): -EAGAIN, retried next pass.
        expected = 1 + mem.mapcount[pending].astype(np.int32)
        busy = ((mem.flags[pending] & PG_locked) != 0) | (mem.refcount[pending] > expected)
        ok = tried & ~split_mask & (dst >= 0) & ~busy
        mem.folio_put(dst[tried & busy & (dst >= 0)])
        src, d, o = pending[ok], dst[ok], orders[ok]
        t0 = trio.current_time()
        if src.size:
            mem.flags[src] |= PG_locked
            mem.flags[d] |= PG_locked | (mem.flags[src] & PG_movable_ops)
            self.machine.try_to_migrate(src, o)
        costs = self.profile.cpu.unmap_seconds(o)
        if self.clock.virtual:
            t_unmap = t0 + np.cumsum(costs)
            await self.clock.spend(float(costs.sum()))
        else:
            t_unmap = np.full(src.size, t0)
            await self.clock.yield_point()
        still = pending[tried & ~split_mask & ~ok]
        untried = pending[stop + 1:] if stop < n else _EMPTY
        stopped_at = int(pending[stop]) if stop < n else None
        if stopped_at is not None:
            still = np.concatenate([still, untried])
        return _Unmapped(src, d, o, t_unmap), still, split_parts, stopped_at

    async def _batch_copy(self, ctx: _Ctx, todo: _Unmapped) -> tuple[int, int, str | None]:
        """The RFC's batch copy of eligible folios through the active migrator.

        Eligible: reason in the migrator's mask, refcount as expected, not
        movable_ops.  Returns (offloaded, fell back, fallback cause).
        """
        mem = self.memory
        offload = ctx.offload
        if not (offload.reason_mask >> ctx.reason) & 1:
            return 0, 0, None
        eligible = (mem.refcount[todo.src] == 1) & ((mem.flags[todo.src] & PG_movable_ops) == 0)
        if not eligible.any():
            return 0, 0, None
        sel = slice(None) if eligible.all() else eligible
        batch = CopyBatch(mem, todo.src[sel], todo.dst[sel], todo.orders[sel],
                          self.clock, self.profile)
        if offload.is_default:
            self._add_cpu_seconds("cpu", await folios_mc_copy(batch))
            batch.mark_copied()
            return batch.nr_folios, 0, None
        try:
            rc = await offload.migrator.migrate_offc(batch)
        except Exception:  # a migrator bug must not lose pages: the CPU copies
            rc = -errno.EIO
        missed = int(((mem.flags[batch.src] & FOLIO_CONTENT_COPIED) == 0).sum())
        cause = None
        if missed:
            cause = errno.errorcode.get(-rc, "EIO") if rc < 0 else "incomplete"
            self._fallbacks[cause] = self._fallbacks.get(cause, 0) + missed
        return batch.nr_folios, missed, cause

    async def _move(self, ctx: _Ctx, mv: _Unmapped) -> np.ndarray:
        """The move loop: per folio, copy unless copied, remap, unlock, free.

        The first folio is moved on its own so that its remap time is real
        (first-folio latency); the rest follow as one vector step.  Returns
        each folio's remap time.
        """
        mem = self.memory
        times = []
        for part in (slice(0, 1), slice(1, None)):
            s, d, o = mv.src[part], mv.dst[part], mv.orders[part]
            if s.size == 0:
                break
            copied = (mem.flags[s] & FOLIO_CONTENT_COPIED) != 0
            mem.flags[s] &= _NOT_COPIED  # consumed on first read
            costs = self.profile.cpu.move_seconds(o)
            if not copied.all():  # folio_mc_copy() of what the batch copy missed
                need = ~copied
                t = time.perf_counter()
                mem.copy_folios(d[need], s[need], o[need])
                cpu_copy = np.where(need, self.profile.cpu.copy_seconds(o), 0.0)
                costs = costs + cpu_copy
                self._add_cpu_seconds("cpu", float(cpu_copy.sum()) if self.clock.virtual
                                      else time.perf_counter() - t)
            t0 = trio.current_time()
            if self.clock.virtual:
                await self.clock.spend(float(costs.sum()))
            mem.mapping[d] = mem.mapping[s]  # folio_migrate_mapping()
            mem.index[d] = mem.index[s]
            self.machine.remove_migration_ptes(s, d, o)
            mem.flags[d] &= _UNLOCK
            mem.flags[s] &= _UNLOCK
            mem.refcount[s] -= 1
            mem.folio_put(s)
            times.append(t0 + np.cumsum(costs) if self.clock.virtual
                         else np.full(s.size, trio.current_time()))
            ctx.stats.nr_succeeded += int(np.left_shift(1, o.astype(np.int64)).sum())
            ctx.stats.nr_folios_succeeded += int(s.size)
            ctx.stats.nr_thp_succeeded += int((o == HPAGE_PMD_ORDER).sum())
            self._count_folios(ctx, o, True)
            if not self.clock.virtual:
                await self.clock.yield_point()
        return np.concatenate(times)

    def _undo(self, todo: _Unmapped) -> np.ndarray:
        """``migrate_folio_undo_src()`` / ``_dst()``: remap the source, free the dst."""
        mem = self.memory
        mem.flags[todo.src] &= _NOT_COPIED
        self.machine.remove_migration_ptes(todo.src, todo.src, todo.orders)
        mem.flags[todo.src] &= _UNLOCK
        mem.flags[todo.dst] &= _UNLOCK
        mem.folio_put(todo.dst)
        return np.full(todo.src.size, trio.current_time())

    # -- accounting ----------------------------------------------------------------------

    def _count_failed(self, ctx: _Ctx, heads: np.ndarray) -> None:
        if heads.size == 0:
            return
        o = self.memory.folio_order[heads]
        ctx.stats.nr_failed_pages += int(np.left_shift(1, o.astype(np.int64)).sum())
        ctx.stats.nr_folios_failed += int(heads.size)
        ctx.stats.nr_thp_failed += int((o == HPAGE_PMD_ORDER).sum())
        self._count_folios(ctx, o, False)

    def _count_folios(self, ctx: _Ctx, orders: np.ndarray, ok: bool) -> None:
        key = (ctx.offload.migrator.name, ctx.reason.label, ok)
        self._folios[key] = self._folios.get(key, 0) + int(orders.size)
        nbytes = int(np.left_shift(1, orders.astype(np.int64)).sum()) * PAGE_SIZE
        self._bytes[key] = self._bytes.get(key, 0) + nbytes

    def _add_cpu_seconds(self, who: str, seconds: float) -> None:
        self._cpu_copy_seconds[who] = self._cpu_copy_seconds.get(who, 0.0) + seconds

    def _count_vm_events(self, reason: MigrateReason, s: MigrateStats) -> None:
        self._vmstat[reason] += (s.nr_succeeded, s.nr_failed_pages, s.nr_thp_succeeded,
                                 s.nr_thp_failed, s.nr_thp_split)

    def _record_batch(self, ctx, mode, nr_folios, nr_pages, nr_failed, nr_offloaded,
                      nr_fallback, cause, t_entry, first_folio, moved_times) -> None:
        name = ctx.offload.migrator.name
        self._batches[name] = self._batches.get(name, 0) + 1
        inacc = np.concatenate(moved_times) if moved_times else np.empty(0)
        self._h_batch_pages.observe_many(np.array([nr_pages], dtype=np.float64))
        if first_folio is not None:
            self._h_first_folio.observe_many(np.array([first_folio]))
        self._h_inaccessible.observe_many(inacc)
        if not self._listeners:
            return
        record = BatchRecord(
            reason=ctx.reason.label, migrator=name, mode=mode.value,
            target_nid=ctx.target_nid, nr_folios=nr_folios, nr_pages=nr_pages,
            nr_succeeded=nr_folios - nr_failed, nr_failed=nr_failed,
            nr_offloaded=nr_offloaded, nr_fallback=nr_fallback, fallback_cause=cause,
            start=t_entry, end=trio.current_time(), first_folio_seconds=first_folio,
            inaccessible_seconds=inacc)
        for listener in list(self._listeners):
            listener(record)
