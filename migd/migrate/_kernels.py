"""The per-folio loops of ``migrate_pages_batch()`` (mm/migrate.c), compiled.

The engine (``_engine``) keeps the control flow — passes, splitting, the batch
copy, the clocks and the accounting — in Python; these loops do the per-folio
work of the unmap loop, the move loop and the undo, over a list of folios in
compiled code.  Why compiled: the kernel's own loop costs well under a
microsecond per folio; numpy's per-call overhead made a batch holding one
2 MiB folio spend more time in bookkeeping than in copying it.
"""

from __future__ import annotations

import numba
import numpy as np

from ..dma import folios_copy_dma
from ..mm import (
    FOLIO_CONTENT_COPIED,
    HPAGE_PMD_ORDER,
    NOT_COPIED_MASK,
    UNLOCK_MASK,
    PG_locked,
    PG_movable_ops,
    PG_writeback,
    alloc_block,
    folio_free,
    folio_init,
    folios_copy_mt,
    folios_mc_copy,
    folios_set_content_copied,
    free_block,
    ktime_get_ns,
    memcpy,
    remove_migration_ptes,
    try_to_migrate,
)


@numba.njit(cache=True, nogil=True)
def histogram_observe(bounds, counts, values):
    """Count each of ``values`` in its bucket (``bisect_left`` on the upper
    ``bounds``; the last count is +Inf) and return their sum: a batch's 512
    inaccessible times in ~1 us, where searchsorted + bincount took ~6."""
    total = 0.0
    nb = bounds.size
    for v in values:
        lo, hi = 0, nb
        while lo < hi:
            mid = (lo + hi) >> 1
            if bounds[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        counts[lo] += 1
        total += v
    return total


#: ``migrate_folio_unmap()`` outcomes, per folio.
MIGRATEPAGE_UNMAP = 0
UNMAP_EAGAIN = 1
UNMAP_SPLIT = 2  # -ENOMEM, split into base folios (set by the engine)
UNMAP_NOT_TRIED = 3
UNMAP_EBUSY = 4  # under writeback, not MIGRATE_SYNC: a permanent failure


@numba.njit(cache=True, nogil=True)
def migrate_folio_unmap_batch(bitmap, area, mem_map, ptes, pending, fail_alloc, target,
                              first, result, dst, t_unmap):
    """Unmap ``pending[first:]`` in list order, like the unmap loop.

    For each folio: allocate the destination (``get_new_folio``; an injected
    failure counts as -ENOMEM), fail with -EAGAIN if it is locked or pinned
    (``try_to_migrate()`` cannot unmap a maybe-DMA-pinned anon page), fail with
    -EBUSY if it is under writeback (a sync caller waited for that first),
    else lock both folios and install migration entries.  Stops at the first
    -ENOMEM.

    Returns ``(stop, nr_unmapped, nr_movable_ops)``: the index of the -ENOMEM
    folio (``pending.size`` if none), how many folios were unmapped, and how
    many of those are movable_ops folios (never batch-copy eligible).
    ``t_unmap[i]`` gets each unmapped folio's ``ktime_get_ns()`` once its
    migration entries are in (its inaccessible time starts there).
    """
    nr_unmapped = 0
    nr_movable_ops = 0
    nid = np.int64(target)  # int64 at every call: the helpers compile for one type
    for i in range(first, pending.size):
        src = pending[i]
        pg = mem_map[src]
        if fail_alloc[i]:
            return i, nr_unmapped, nr_movable_ops
        order = np.int64(pg.order)
        d = alloc_block(bitmap, area, nid, order)
        if d < 0:
            return i, nr_unmapped, nr_movable_ops
        if pg.flags & PG_locked:
            free_block(bitmap, area, nid, order, np.int64(d))
            result[i] = UNMAP_EAGAIN
            continue
        if pg.flags & PG_writeback:  # migrate_folio_unmap(): after the lock
            free_block(bitmap, area, nid, order, np.int64(d))
            result[i] = UNMAP_EBUSY
            continue
        if pg.refcount > 1 + pg.mapcount:
            free_block(bitmap, area, nid, order, np.int64(d))
            result[i] = UNMAP_EAGAIN
            continue
        movable_ops = pg.flags & PG_movable_ops
        folio_init(mem_map, d, order, np.int64(PG_locked | movable_ops))
        pg.flags |= PG_locked
        try_to_migrate(mem_map, ptes, src)
        t_unmap[i] = ktime_get_ns()
        result[i] = MIGRATEPAGE_UNMAP
        dst[i] = d
        nr_unmapped += 1
        nr_movable_ops += movable_ops != 0
    return pending.size, nr_unmapped, nr_movable_ops


@numba.njit(cache=True, nogil=True)
def migrate_folio_unmap_clean(bitmap, area, mem_map, ptes, folios, lo, hi, target, dst,
                              t_unmap):
    """The unmap loop's first pass when every folio unmaps at once, else nothing.

    As ``migrate_folio_unmap_batch`` with no fault armed, for a batch that
    needs no retry: each folio gets its destination, is locked and unmapped.
    At the first folio that would not (locked, pinned, movable_ops, no
    destination memory) the unmaps so far are undone — nothing ran meanwhile,
    so nothing saw them — and False is returned: the batch is the engine's
    general path's.  ``folios[lo:hi]`` is the batch (``dst`` indexed alike).
    The virtual clock's closed-form batch (``_vclock``) and the real clock's
    fast path (``migrate_pages_batch_fast``) both start here.  ``t_unmap``
    (indexed alike, or empty: not timed) gets each folio's unmap time.
    """
    timed = t_unmap.size > 0
    k = lo
    n = hi
    while k < n:
        src = folios[k]
        pg = mem_map[src]
        if ((pg.flags & (PG_locked | PG_movable_ops | PG_writeback))
                or pg.refcount > 1 + pg.mapcount):
            break
        d = alloc_block(bitmap, area, np.int64(target), np.int64(pg.order))
        if d < 0:
            break
        folio_init(mem_map, d, np.int64(pg.order), np.int64(PG_locked))
        pg.flags |= PG_locked
        try_to_migrate(mem_map, ptes, src)
        if timed:
            t_unmap[k] = ktime_get_ns()
        dst[k] = d
        k += 1
    if k == n:
        return True
    for u in range(lo, k):
        remove_migration_ptes(mem_map, ptes, folios[u], folios[u])
        mem_map[folios[u]].flags &= UNLOCK_MASK
        folio_free(bitmap, area, mem_map, dst[u])
    return False


@numba.njit(cache=True, nogil=True)
def migrate_folio_move_batch(bitmap, area, mem_map, ptes, base, page_bytes, src, dst,
                             cpu_copied, t_remap):
    """The move loop: ``migrate_folio_move()`` for each folio.

    ``move_to_new_folio()`` copies the contents with ``folio_mc_copy()`` unless
    the batch copy already did (FOLIO_CONTENT_COPIED, consumed here) and
    records that in ``cpu_copied``; then ``folio_migrate_mapping()``, remap,
    unlock, and the source's last reference is dropped.  ``t_remap[i]`` (or
    nothing, if empty) gets each folio's remap time, ``ktime_get_ns()`` right
    after its migration entries are gone; then the copies are timed too, the
    copy alone (``folio_mc_copy()``, not the remap and free around it).
    Returns ``(nr_pages, nr_thp, nr_cpu_copied_pages, copy_ns)``.
    """
    timed = t_remap.size > 0
    nr_pages = 0
    nr_thp = 0
    nr_copied = 0
    copy_ns = 0
    for i in range(src.size):
        s = mem_map[src[i]]
        d = mem_map[dst[i]]
        order = s.order
        if s.flags & FOLIO_CONTENT_COPIED:
            s.flags &= NOT_COPIED_MASK
            cpu_copied[i] = False
        else:
            if timed:
                copy_ns -= ktime_get_ns()
            memcpy(base + dst[i] * page_bytes, base + src[i] * page_bytes, page_bytes << order)
            if timed:
                copy_ns += ktime_get_ns()
            cpu_copied[i] = True
            nr_copied += 1 << order
        d.mapping = s.mapping
        d.index = s.index
        remove_migration_ptes(mem_map, ptes, src[i], dst[i])
        if timed:
            t_remap[i] = ktime_get_ns()
        d.flags &= UNLOCK_MASK
        folio_free(bitmap, area, mem_map, src[i])
        nr_pages += 1 << order
        nr_thp += order == HPAGE_PMD_ORDER
    return nr_pages, nr_thp, nr_copied, copy_ns


@numba.njit(cache=True, nogil=True)
def migrate_folio_undo_batch(bitmap, area, mem_map, ptes, src, dst):
    """``migrate_folio_undo_src()`` + ``_dst()``: remap the source, free the dst."""
    for i in range(src.size):
        s = mem_map[src[i]]
        s.flags &= NOT_COPIED_MASK
        remove_migration_ptes(mem_map, ptes, src[i], src[i])
        s.flags &= UNLOCK_MASK
        folio_free(bitmap, area, mem_map, dst[i])


@numba.njit(cache=True, nogil=True)
def batch_end(cum, i, bound, crossing):
    """Where the batch starting at folio ``i`` ends (exclusive), in ``migrate_pages()``.

    ``cum``: the running page count of the list.  ``crossing``: the batch ends
    with the folio that reaches the bound (the kernel's ``nr_pages >=
    NR_MAX_BATCHED_MIGRATION`` cut, which lets that folio cross it); else (under
    a latency budget) before a folio that would cross it, one folio at least.
    One rule for both the engine's general path and the compiled fast path, so
    the two never cut a list differently.
    """
    n = cum.size
    done = cum[i - 1] if i > 0 else 0
    j = i
    while j < n - 1 and cum[j] - done < bound:
        j += 1
    if crossing or j == i or cum[j] - done <= bound:
        j += 1
    return j


#: Columns of the per-batch timing rows written by ``migrate_pages_batch_fast``
#: (``NR_CHAN``: DMA channels the batch claimed, 0 for a CPU copy; ``NR_FAILED``:
#: folios a timed-out DMA copy left to the move loop).
T_ENTRY, T_UNMAPPED, T_COPIED, T_FIRST, T_END, NR_FOLIOS, NR_PAGES, NR_THP, NR_CHAN, \
    NR_FAILED, MOVE_COPY_NS, NR_COLUMNS = range(12)
@numba.njit(cache=True, nogil=True)
def migrate_pages_batch_fast(bitmap, area, mem_map, ptes, base, page_bytes, folios, cum,
                             start, target, bound, crossing, deadline_ns, nr_threads, dst,
                             scratch, rows, chan_ctl, chan_stats, timeout_ns, nr_cpus,
                             cpuclock, t_unmap, t_remap):
    """Whole ``migrate_pages_batch()`` runs, compiled, for the vanilla path,
    CPU-copy migrators and migrators with a compiled DMA copy.

    ``nr_threads`` 0: the vanilla kernel (no migrator, or a batch it does not
    take): no batch copy, ``move_to_new_folio()`` copies each folio with
    ``folio_mc_copy()`` and remaps it before the next is touched.  1: a batch
    copy with ``folios_mc_copy`` before the move loop; more: the
    multi-threaded copy (pieces claimed by the caller and the copy helpers,
    ``mm._mtpool``).  ``chan_ctl`` with rows: the batch copy is the
    migrator's compiled copy, by the copy threads of those DMA channels
    (``dma.folios_copy_dma``; ``chan_stats`` gets their counts,
    ``timeout_ns`` bounds each wait, and the caller spins a little first when
    ``nr_cpus`` leave it a CPU; ``cpuclock``: its own CPU-time clock).

    Cuts batches from ``folios[start:]`` as ``migrate_pages()`` does (``cum``: running
    page count; ``crossing``: whether the folio that crosses the bound ends the batch,
    as in the kernel, or starts the next), and runs each one clean batch as the engine
    would: the unmap loop, the batch copy (``folios_mc_copy``), the move loop.  Only the
    uncontended case is handled: at the first folio that would not unmap at once
    (locked, pinned, movable_ops, no destination memory) the batch's unmaps are undone —
    no other task ran meanwhile, so nothing saw them — and the call returns, leaving
    that batch to the engine's general path, which handles retries, splitting and
    failures.  Stops after the batch that passes ``deadline_ns`` so the event loop keeps
    its turn.

    Returns ``(next_folio, nr_batches)``; ``rows[b]`` gets the timings and sizes
    of batch ``b`` (columns ``T_ENTRY`` ... ``NR_THP``).  ``scratch``: a bool
    array as long as ``folios``; ``t_unmap`` / ``t_remap`` (as long too) get
    each folio's unmap and remap ``ktime_get_ns()``.
    """
    n = folios.size
    i = start
    b = 0
    while i < n and b < rows.shape[0]:
        j = batch_end(cum, i, bound, crossing)
        t_entry = ktime_get_ns()
        # the unmap loop, first pass; not a clean batch: undone, the engine's
        if not migrate_folio_unmap_clean(bitmap, area, mem_map, ptes, folios, i, j, target,
                                         dst, t_unmap):
            break
        t_unmapped = ktime_get_ns()
        # the batch copy (only when the batch is offloaded), marking each folio
        # FOLIO_CONTENT_COPIED as the general path's does; the vanilla order
        # (nr_threads 0) leaves every copy to the move loop, folio by folio
        nr_chan = 0
        if chan_ctl.shape[0]:
            nr_chan = folios_copy_dma(base, page_bytes, mem_map, dst, folios, i, j, chan_ctl,
                                      chan_stats, timeout_ns, nr_cpus, cpuclock)
        elif nr_threads > 1:
            folios_copy_mt(base, page_bytes, mem_map, dst, folios, i, j, nr_threads)
            folios_set_content_copied(mem_map, folios[i:j])
        elif nr_threads == 1:
            folios_mc_copy(base, page_bytes, mem_map, dst[i:j], folios[i:j])
        t_copied = ktime_get_ns()
        # the move loop, the first folio on its own for its remap time
        nr_pages, nr_thp, _, copy_ns = migrate_folio_move_batch(
            bitmap, area, mem_map, ptes, base, page_bytes, folios[i:i + 1], dst[i:i + 1],
            scratch, t_remap[i:i + 1])
        t_first = t_remap[i]
        more_pages, more_thp, _, more_ns = migrate_folio_move_batch(
            bitmap, area, mem_map, ptes, base, page_bytes, folios[i + 1:j], dst[i + 1:j],
            scratch, t_remap[i + 1:j])
        nr_pages += more_pages
        nr_thp += more_thp
        copy_ns += more_ns
        t_end = ktime_get_ns()
        r = rows[b]
        r[T_ENTRY] = t_entry
        r[T_UNMAPPED] = t_unmapped
        r[T_COPIED] = t_copied
        r[T_FIRST] = t_first
        r[T_END] = t_end
        r[NR_FOLIOS] = j - i
        r[NR_PAGES] = nr_pages
        r[NR_THP] = nr_thp
        r[NR_CHAN] = abs(nr_chan)
        r[NR_FAILED] = j - i if nr_chan < 0 else 0
        r[MOVE_COPY_NS] = copy_ns
        b += 1
        i = j
        if t_end >= deadline_ns or nr_chan < 0:
            break
    return i, b
