"""Compiled per-folio loops of mm/: folio allocation and freeing, the rmap walks.

Each function is what the kernel does to one folio; the ``*_batch`` loops
apply it to a list of folios in compiled code (numba).  They work on
``mem_map`` (the ``struct page`` records, see ``_page.page_dtype``), the free
area (``_buddy``) and the machine-wide page table (``_page.pte_dtype``).  A
folio's ``index`` is its global virtual page, so the rmap walk needs no lookup
of the tenant.  Written with explicit index loops: numba's slice assignments
measured 10x slower here.
"""

from __future__ import annotations

import numba
import numpy as np

from ._buddy import alloc_block, free_block
from ._page import (
    FOLIO_CONTENT_COPIED,
    FOLIO_WAS_MAPPED,
    FOLIO_WAS_MLOCKED,
    PG_isolated,
    PG_locked,
    PG_mlocked,
)

UNLOCK_MASK = ~PG_locked
NOT_COPIED_MASK = ~FOLIO_CONTENT_COPIED


@numba.njit(cache=True, nogil=True)
def folio_init(mem_map, pfn, order, flags):
    """A freshly allocated folio: one reference, unmapped."""
    for p in range(1 << order):
        mem_map[pfn + p].order = order
    pg = mem_map[pfn]
    pg.flags = flags
    pg.refcount = 1
    pg.mapcount = 0
    pg.mapping = -1
    pg.index = 0


@numba.njit(cache=True, nogil=True)
def folio_free(bitmap, area, mem_map, pfn):
    """The last reference is gone: back to the buddy allocator."""
    pg = mem_map[pfn]
    order = pg.order
    if order < 0:
        raise ValueError("freeing a page that is not an allocated folio")
    for p in range(1 << order):
        mem_map[pfn + p].order = -1
    pg.flags = 0
    pg.refcount = 0
    pg.mapping = -1
    free_block(bitmap, area, np.int64(pg.nid), np.int64(order), np.int64(pfn))


@numba.njit(cache=True, nogil=True)
def folio_alloc_batch(bitmap, area, mem_map, nid, order, count, out):
    n = 0
    while n < count:
        pfn = alloc_block(bitmap, area, np.int64(nid), np.int64(order))
        if pfn < 0:
            break
        folio_init(mem_map, pfn, np.int64(order), np.int64(0))
        out[n] = pfn
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def folio_put_batch(bitmap, area, mem_map, heads):
    for i in range(heads.size):
        folio_free(bitmap, area, mem_map, heads[i])


@numba.njit(cache=True, nogil=True)
def try_to_migrate(mem_map, ptes, src):
    """Replace a mapped folio's PTEs with migration entries (mm/rmap.c).

    Records the kernel's ``old_page_state`` on the source (FOLIO_WAS_MAPPED,
    FOLIO_WAS_MLOCKED; an mlocked folio is munlocked while it migrates).
    """
    pg = mem_map[src]
    f = pg.flags
    if f & PG_mlocked:
        f = (f | FOLIO_WAS_MLOCKED) & ~PG_mlocked
    if pg.mapcount > 0:
        f |= FOLIO_WAS_MAPPED
        v = pg.index
        for p in range(1 << pg.order):
            ptes[v + p].migration_entry = True
        pg.refcount -= pg.mapcount
        pg.mapcount = 0
    pg.flags = f


@numba.njit(cache=True, nogil=True)
def remove_migration_ptes(mem_map, ptes, src, dst):
    """Make the migration entries of ``src`` present again, pointing at ``dst``.

    ``dst == src`` is the undo path.  Consumes FOLIO_WAS_MAPPED/_MLOCKED.
    """
    s = mem_map[src]
    d = mem_map[dst]
    f = s.flags
    if f & FOLIO_WAS_MLOCKED:
        d.flags |= PG_mlocked
    if f & FOLIO_WAS_MAPPED:
        v = s.index
        for p in range(1 << s.order):
            pte = ptes[v + p]
            pte.pfn = dst + p
            pte.migration_entry = False
        d.mapcount = 1
        d.refcount += 1
    s.flags &= ~(FOLIO_WAS_MAPPED | FOLIO_WAS_MLOCKED)


@numba.njit(cache=True, nogil=True)
def folio_isolate_batch(mem_map, folios, out):
    """``folio_isolate_lru()`` over a caller's list: keep (in ``out``) each folio
    that is an allocated head on an LRU list and not on a migration list yet,
    and mark it.  A folio named twice fails the second time, as it would in the
    kernel.  On an LRU means mapped by a tenant (``mapping`` set): a folio
    allocated but not yet mapped (a migration's destination before its move,
    a folio being zeroed for a fault, the prezero pool's) is on no LRU, so
    ``folio_test_clear_lru()`` fails for it (mm/vmscan.c), as it fails in
    ``isolate_migratepages_block()`` for a page that is neither LRU nor
    movable_ops: a caller's stale pick of a freed-and-reused pfn is dropped."""
    n = 0
    for i in range(folios.size):
        f = folios[i]
        if f < 0 or f >= mem_map.size:
            continue
        pg = mem_map[f]
        if pg.order < 0 or (f & ((1 << pg.order) - 1)) or pg.flags & PG_isolated:
            continue
        if pg.mapping < 0:
            continue
        pg.flags |= PG_isolated
        out[n] = f
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def folio_putback_batch(mem_map, folios):
    """``putback_movable_pages()``: the folios still allocated leave their list."""
    for i in range(folios.size):
        pg = mem_map[folios[i]]
        if pg.order >= 0:
            pg.flags &= ~PG_isolated
