"""The unmap and move loops of ``migrate_pages_batch()`` (mm/migrate.c).

``unmap_loop``: ``migrate_folio_unmap()`` over the list, pass after pass
(allocate the destination, trylock, install migration entries; -EAGAIN retries
next pass, -ENOMEM splits a large folio or stops).  ``move``: the move loop,
``migrate_folio_move()`` per folio, whose ``move_to_new_folio()`` copies a
folio the batch copy did not mark.  ``undo``: ``migrate_folio_undo_src()`` /
``_dst()``.  The per-folio work is compiled (``_kernels``); the clocks are
charged here and the outcomes tallied for the batch's ledger record
(``record_batch``).  Functions of the engine rather than its methods, so that
``_engine`` holds ``migrate_pages()`` and ``migrate_pages_batch()`` as the
kernel writes them and stays readable at one sitting.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

import numpy as np
import trio

from ..hw import quiet_for
from ..mm import FOLIO_CONTENT_COPIED, HPAGE_PMD_ORDER, MigrateMode, PG_locked, PG_writeback
from . import _kernels as _k
from ._stats import NO_FOLIOS, BatchRecords
from ._way import Path

#: No folio moved: no owner, no copy.
NO_TENANTS = np.empty(0, dtype=np.int32)
NO_COPIES = np.empty(0, dtype=np.bool_)
NO_ORDERS = np.empty(0, dtype=np.int8)
#: A one-batch record's ``retried`` column (read-only, shared).
RETRIED, NOT_RETRIED = np.ones(1, dtype=np.bool_), np.zeros(1, dtype=np.bool_)
RETRIED.flags.writeable = NOT_RETRIED.flags.writeable = False


@dataclass
class Unmapped:
    """Folios that are unmapped and have a destination: the kernel's
    ``unmap_folios`` / ``dst_folios`` lists, with the time each was unmapped
    (a scalar when all were unmapped at once)."""

    src: np.ndarray
    dst: np.ndarray
    t_unmap: np.ndarray | float
    nr_movable_ops: int

    def take(self, sel: np.ndarray) -> Unmapped:
        t = self.t_unmap if np.isscalar(self.t_unmap) else self.t_unmap[sel]
        return Unmapped(self.src[sel], self.dst[sel], t, -1 if self.nr_movable_ops else 0)


async def unmap_loop(eng, ctx, folios: np.ndarray, mode: MigrateMode, nr_pass: int,
                     nosplit: bool):
    """The unmap loop with its passes, in the batch's ``mode``.

    Returns ``(unmapped, left, split_parts, rc, untried, passes)``: what is
    unmapped, the folios that failed (-EBUSY at once, -EAGAIN after every
    pass, or the one whose allocation failed and those -EAGAIN before it in
    its pass), the parts of folios split on -ENOMEM, -ENOMEM or 0, the folios
    -ENOMEM left untried, and the passes run.  In a sync mode every pass
    sleeps in :func:`folio_lock` first, as ``migrate_folio_unmap()`` calls
    ``folio_lock()`` on every pass, not only the first.
    """
    pending = folios
    parts: list[Unmapped] = []
    splits: list[np.ndarray] = []
    busy: list[np.ndarray] = []  # -EBUSY: permanent, off the list at once
    passes = 0
    while passes < nr_pass:
        passes += 1
        await folio_lock(eng, pending, mode, ctx.memalloc)
        done, pending, split, stopped, untried, ebusy = await unmap_pass(
            eng, ctx, pending, nosplit)
        if done.src.size:
            parts.append(done)
        if ebusy.size:
            busy.append(ebusy)
        splits += split
        if stopped is not None:
            left = np.concatenate([*busy, np.array([stopped], dtype=np.int64), pending])
            return join(parts), left, splits, -errno.ENOMEM, untried, passes
        if pending.size == 0:
            break
    left = np.concatenate([*busy, pending]) if busy else pending
    return join(parts), left, splits, 0, NO_FOLIOS, passes

def join(parts: list[Unmapped]) -> Unmapped:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Unmapped(NO_FOLIOS, NO_FOLIOS, 0.0, 0)
    return Unmapped(
        np.concatenate([p.src for p in parts]), np.concatenate([p.dst for p in parts]),
        np.concatenate([np.broadcast_to(p.t_unmap, p.src.shape) for p in parts]),
        sum(p.nr_movable_ops for p in parts))

def wait_mask(mode: MigrateMode, memalloc: bool) -> int:
    """What ``migrate_folio_unmap()`` sleeps on in ``mode``: a locked folio
    (``folio_lock()``) unless MIGRATE_ASYNC or the caller is PF_MEMALLOC
    (direct compaction: ``goto out``, -EAGAIN); writeback
    (``folio_wait_writeback()``) only in MIGRATE_SYNC, the others fail the
    folio with -EBUSY."""
    if mode is MigrateMode.MIGRATE_ASYNC:
        return 0
    mask = 0 if memalloc else PG_locked
    return mask | (PG_writeback if mode is MigrateMode.MIGRATE_SYNC else 0)


async def folio_lock(eng, heads: np.ndarray, mode: MigrateMode, memalloc: bool) -> None:
    """A sync mode's sleep in ``migrate_folio_unmap()``: while any of
    ``heads`` is locked or under writeback, as :func:`wait_mask` says.
    Sync batches hold one folio (``migrate_pages_sync()``), so no lock is
    held while it sleeps.  The pass then runs with no await in between, so
    what it slept on is gone when the folio is tried.  Before the batch's
    first pass the caller may be cancelled; on a later pass (inside the
    batch's shield) only :meth:`MigrationEngine.stop` cuts the sleep short
    (the lock holders are other batches, which always unlock)."""
    mask = wait_mask(mode, memalloc)
    if not mask or heads.size == 0:
        return
    mem = eng.memory
    while not eng.stopping and (mem.flags[heads] & mask).any():
        await eng.machine.folio_wait()

async def unmap_pass(eng, ctx, pending: np.ndarray, nosplit: bool):
    """One pass of the unmap loop over ``pending``, in list order.

    Returns ``(unmapped, still_pending, split_parts, stopped_at, untried,
    ebusy)``; ``stopped_at`` is the folio whose allocation failed when
    migration must stop (-ENOMEM), else None; then ``still_pending`` are the
    folios that failed before it in this pass, ``untried`` those after it;
    ``ebusy`` failed for good (under writeback, not MIGRATE_SYNC).
    """
    mem = eng.memory
    n = pending.size
    fail_alloc = eng.faults["fail_migrate_alloc"].should_fail_many(n)
    if ctx.alloc_fails is not None:  # the caller's get_new_folio(): large folios only
        fail_alloc |= np.isin(pending, ctx.alloc_fails) & (mem.folio_order[pending] > 0)
    result = np.full(n, _k.UNMAP_NOT_TRIED, dtype=np.int8)
    dst = np.empty(n, dtype=np.int64)
    t_ns = np.empty(n, dtype=np.int64)  # each folio's unmap, ktime_get_ns()
    split_parts: list[np.ndarray] = []
    stopped_at = None
    untried = NO_FOLIOS
    t0 = trio.current_time()
    offset = t0 - time.perf_counter()  # trio's clock less perf_counter's (ktime's)
    first = nr_unmapped = nr_movable_ops = 0
    while True:
        i, unmapped, movable_ops = _k.migrate_folio_unmap_batch(
            *eng.kernel_state, pending, fail_alloc, ctx.target_nid, first, result, dst, t_ns)
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
            untried = pending[i + 1:]
            break
        split_parts.append(mem.split_folio(head))
        result[i] = _k.UNMAP_SPLIT
        is_thp = int(order == HPAGE_PMD_ORDER)
        ctx.stats.nr_thp_split += is_thp
        ctx.stats.nr_thp_failed += is_thp
        ctx.stats.nr_split += 1
        first = i + 1
    ebusy = NO_FOLIOS
    if nr_unmapped == n:
        src, still = pending, NO_FOLIOS
    else:
        ebusy = pending[result == _k.UNMAP_EBUSY]
        ok = result == _k.MIGRATEPAGE_UNMAP
        src, dst, t_ns = pending[ok], dst[ok], t_ns[ok]
        if stopped_at is None:
            still = pending[(result == _k.UNMAP_EAGAIN) | (result == _k.UNMAP_NOT_TRIED)]
        else:
            still = pending[result == _k.UNMAP_EAGAIN]
    if eng.clock.virtual:
        costs = eng.profile.cpu.unmap_seconds(mem.folio_order[src], ctx.pos)
        t_unmap = t0 + np.cumsum(costs)
        await eng.clock.spend(float(costs.sum()))
    else:  # each folio's own unmap, on trio's clock
        t_unmap = t_ns * 1e-9 + offset
        await eng.clock.yield_point()  # mutators may now meet migration entries
    return (Unmapped(src, dst, t_unmap, nr_movable_ops), still, split_parts, stopped_at,
            untried, ebusy)

#: A batch's copy costs when the batch copy copied every folio: none (its
#: parts' sums are 0.0, as the step path's were).
_NO_COPY = np.zeros(2)


async def move(eng, ctx, mv: Unmapped) -> np.ndarray:
    """The move loop (``migrate_folio_move()`` per folio); returns each
    folio's remap time and whether the move loop copied it (``folio_mc_copy()``,
    not marked by a batch copy).

    ``move_to_new_folio()`` copies a folio the batch copy did not mark
    (``folio_mc_copy()``), then it is remapped before the next is copied.
    The first folio is moved on its own so that its remap time is real
    (first-folio latency) and its waiters wake before folio 1 is copied;
    the rest follow in one compiled loop.  On the closed-form way (the
    virtual clock's, ``_vclock``): when no task could see folio 0 remapped
    before the others - none waits on a folio, none is runnable, no sleep
    ends before the loop does - all are moved after one sleep, each at its
    modelled remap time all the same.
    """
    mem = eng.memory
    virtual = eng.clock.virtual
    tally = ctx.tally
    times = []
    cpu_copied = []
    parts = (slice(None),) if mv.src.size == 1 else (slice(0, 1), slice(1, None))
    all_costs = None
    if virtual:  # every folio's cost at once (the flags are the batch copy's by now)
        orders = mem.folio_order[mv.src]
        copy = (mem.flags[mv.src] & FOLIO_CONTENT_COPIED) == 0
        all_costs = eng.profile.cpu.move_seconds(orders, ctx.pos)
        if copy.any():  # else no copy adds anything (x + 0.0 is x)
            all_copy = np.where(copy, eng.profile.cpu.copy_seconds(orders), 0.0)
            all_costs = all_costs + all_copy
        else:
            all_copy = _NO_COPY
        closed = ctx.way is not None and ctx.way.path is Path.CLOSED_FORM
        if closed and len(parts) == 2 and unobserved(eng, float(all_costs.sum())):
            if all_copy is not _NO_COPY:  # else each part adds 0.0: nothing
                for part in parts:  # the two parts' books, added as the step path adds them
                    tally.cpu_move += float(all_copy[part].sum())
            t = np.empty(all_costs.size)  # folio 0's remap, then the others'
            t[0] = trio.current_time() + all_costs[0]
            t[1:] = t[0] + np.cumsum(all_costs[1:])
            times = [t]
            await eng.clock.sleep_until(float(t[-1]))
            parts, all_costs = (slice(None),), None
    for part in parts:
        s, d = mv.src[part], mv.dst[part]
        costs = None
        if all_costs is not None:  # charge before remapping: the time passes, then
            costs = all_costs[part]  # the PTEs change
            tally.cpu_move += float(all_copy[part].sum())
            t0 = trio.current_time()
            await eng.clock.spend(float(costs.sum()))
        offset = trio.current_time() - time.perf_counter()
        copied = np.empty(s.size, dtype=np.bool_)
        t_ns = NO_FOLIOS if virtual else np.empty(s.size, dtype=np.int64)
        nr_pages, nr_thp, nr_copied, copy_ns = _k.migrate_folio_move_batch(
            *eng.kernel_state, mem.arena_base, mem.page_bytes, s, d, copied, t_ns)
        cpu_copied.append(copied)
        if nr_copied and not virtual:  # the copies alone, not the remaps around them
            tally.cpu_move += copy_ns * 1e-9
        eng.machine.wake_remapped()
        if costs is not None:
            times.append(t0 + np.cumsum(costs))
        elif not virtual:  # each folio's own remap
            times.append(t_ns * 1e-9 + offset)
        st = ctx.stats
        st.nr_succeeded += nr_pages
        st.nr_folios_succeeded += int(s.size)
        st.nr_thp_succeeded += nr_thp
        tally.pages_ok += nr_pages
        if part.start == 0 and mv.src.size > 1 and not virtual:
            # folio 0's waiters run before folio 1's copy (on the virtual
            # clock the next sleep lets them, at folio 0's remap time)
            await trio.lowlevel.checkpoint()
    t = times[0] if len(times) == 1 else np.concatenate(times)
    return t, cpu_copied[0] if len(cpu_copied) == 1 else np.concatenate(cpu_copied)

def unobserved(eng, seconds: float) -> bool:
    """No other task can run in the next ``seconds`` of virtual time: none
    runnable, none asleep on a folio (woken by a remap), no sleep ending."""
    return quiet_for(seconds) and not eng.machine.nr_folio_waiters()


def undo(eng, todo: Unmapped) -> np.ndarray:
    """``migrate_folio_undo_src()`` / ``_dst()``: remap the source, free the dst."""
    _k.migrate_folio_undo_batch(*eng.kernel_state, todo.src, todo.dst)
    eng.machine.wake_remapped()
    return np.full(todo.src.size, trio.current_time())


# -- accounting ----------------------------------------------------------------------


@dataclass
class Tally:
    """What one batch adds up as it runs, for its ledger record: pages the
    move loop migrated and CPU copy seconds (the move loop's, the migrator's
    CPU batch copy's).  Per batch, not per folio."""

    pages_ok: int = 0
    cpu_move: float = 0.0
    cpu_batch: float = 0.0


def count_failed(eng, ctx, heads: np.ndarray, outside_batch: bool = False) -> int:
    """Folios that stay at the source: ``nr_failed_pages`` (the call's stats);
    returns their pages, which the batch's ledger record carries.  Folios a
    call fails outside any batch (``outside_batch``) go in the books here."""
    if heads.size == 0:
        return 0
    o = eng.memory.folio_order[heads]
    nr_pages = int(np.left_shift(1, o.astype(np.int64)).sum())
    ctx.stats.nr_failed_pages += nr_pages
    ctx.stats.nr_folios_failed += int(heads.size)
    ctx.stats.nr_thp_failed += int((o == HPAGE_PMD_ORDER).sum())
    if outside_batch:
        eng.books.count_folios(ctx.name, ctx.reason.label, int(heads.size), nr_pages, False)
    return nr_pages


def count_untried(eng, ctx, heads: np.ndarray) -> None:
    """Folios -ENOMEM kept from being tried: in no kernel counter."""
    if heads.size:
        ctx.stats.nr_untried_pages += int(eng.memory.folio_nr_pages(heads).sum())
        ctx.stats.nr_folios_untried += int(heads.size)


def record_batch(eng, ctx, mode, nr_folios: int, nr_pages: int, nr_failed: int,
                 nr_split: int, nr_untried: int, pages_failed: int, copied,
                 t_entry: float, first_folio: float | None,
                 inaccessible: list[np.ndarray], tenants: list[np.ndarray],
                 cpu_copied: list[np.ndarray], orders: list[np.ndarray],
                 passes: int) -> None:
    """One batch's ledger record (``mm_migrate_pages``-like, plus migd's
    timings), posted to the books."""
    inacc = (inaccessible[0] if len(inaccessible) == 1 else
             np.concatenate(inaccessible) if inaccessible else np.empty(0))
    owner = (tenants[0] if len(tenants) == 1 else
             np.concatenate(tenants) if tenants else NO_TENANTS)
    by_cpu = (cpu_copied[0] if len(cpu_copied) == 1 else
              np.concatenate(cpu_copied) if cpu_copied else NO_COPIES)
    order = (orders[0] if len(orders) == 1 else
             np.concatenate(orders) if orders else NO_ORDERS)
    tally = ctx.tally
    # one array each for the integer and the float columns, handed out as
    # one-element views: a dozen np.array() calls cost more than the sums
    i = np.array([nr_folios, nr_pages, nr_failed, copied.nr_offloaded if copied else 0,
                  copied.nr_fallback if copied else 0, passes, nr_untried, nr_split,
                  tally.pages_ok, pages_failed, 0, inacc.size], dtype=np.int64)
    f = np.array([t_entry, trio.current_time(), np.nan if first_folio is None else first_folio,
                  tally.cpu_move, tally.cpu_batch])
    eng.books.post(BatchRecords(
        ctx.reason.label, ctx.name, mode.value, ctx.target_nid,
        copied.cause if copied else None, i[0:1], i[1:2], i[2:3], i[3:4], i[4:5], f[0:1],
        f[1:2], f[2:3], inacc, i[10:12], i[5:6], i[6:7], i[7:8], i[8:9], i[9:10],
        RETRIED if ctx.retried else NOT_RETRIED, f[3:4], f[4:5], owner, by_cpu, order),
        ctx.stats)
