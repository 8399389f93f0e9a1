"""The buddy allocator (mm/page_alloc.c): ``struct free_area`` per node and order.

Free blocks are kept as one bitmap per (node, order) — bit ``i`` set: the
order-``k`` block at node-relative index ``i`` is free — all in one flat array,
with a small record per (node, order) (``area``: where its bitmap starts, how
many blocks are free, and a search hint), so that compiled code (numba) can
allocate and free whole batches of folios with exactly the kernel's split
(``expand()``) and merge (``__free_one_page()``) steps.  Under two bits per base
page.  Free lists of Python ints were rejected because at millions of free
pages they alone exceed the metadata budget; vectorised numpy versions cost
more per batch than copying a 2 MiB folio.  The hint (no free block below it)
makes "find the lowest free block" amortised O(1).
"""

from __future__ import annotations

import numba
import numpy as np

from ._page import MAX_FOLIO_ORDER

NR_ORDERS = MAX_FOLIO_ORDER + 1

#: ``nr_alloc``: blocks of this order handed out on this node since boot, the
#: allocator's own count (``zone_statistics()`` counts one NUMA event per
#: allocation, whatever its order); the node files' ``numastat`` reads it.
area_dtype = np.dtype([("start_pfn", np.int64), ("off", np.int64), ("nr_free", np.int64),
                       ("hint", np.int64), ("nr_alloc", np.int64)])


class FreeArea:
    """Free blocks of every node; pfns are global, blocks naturally aligned."""

    def __init__(self, start_pfns: list[int], nr_pages: list[int]) -> None:
        top = 1 << MAX_FOLIO_ORDER
        for n in nr_pages:
            if n <= 0 or n % top:
                raise ValueError(f"node size must be a positive multiple of {top} pages")
        # area[nid, k] for k in 0..NR_ORDERS; row NR_ORDERS only marks the end.
        self.area = np.zeros((len(nr_pages), NR_ORDERS + 1), dtype=area_dtype)
        pos = 0
        for nid, n in enumerate(nr_pages):
            self.area["start_pfn"][nid] = start_pfns[nid]
            for k in range(NR_ORDERS + 1):
                self.area["off"][nid, k] = pos
                if k < NR_ORDERS:
                    pos += n >> k
        self.bitmap = np.zeros(pos, dtype=np.bool_)
        for nid, n in enumerate(nr_pages):
            o = self.area["off"][nid, MAX_FOLIO_ORDER]
            self.bitmap[o:o + (n >> MAX_FOLIO_ORDER)] = True
            self.area["nr_free"][nid, MAX_FOLIO_ORDER] = n >> MAX_FOLIO_ORDER

    def nr_free_pages(self, nid: int) -> int:
        return int((self.area["nr_free"][nid, :NR_ORDERS] << np.arange(NR_ORDERS)).sum())

    def nr_allocations(self) -> np.ndarray:
        """Allocations served per node since boot (one per block, any order)."""
        return self.area["nr_alloc"][:, :NR_ORDERS].sum(axis=1)

    def nr_free_blocks(self, nid: int) -> list[int]:
        """Free blocks per order, as ``/proc/buddyinfo`` shows them."""
        return self.area["nr_free"][nid, :NR_ORDERS].tolist()

    def alloc(self, nid: int, order: int, count: int) -> np.ndarray:
        """Up to ``count`` blocks of ``order`` on ``nid`` (their global head pfns)."""
        out = np.empty(count, dtype=np.int64)
        n = alloc_blocks(self.bitmap, self.area, nid, order, count, out)
        return out[:n]

    def free(self, nid: int, order: int, pfns: np.ndarray) -> None:
        """Free blocks of ``order`` on ``nid``, merging buddies."""
        pfns = np.asarray(pfns, dtype=np.int64)
        if (pfns & ((1 << order) - 1)).any():
            raise ValueError("freeing a block that is not naturally aligned")
        free_blocks(self.bitmap, self.area, nid, order, pfns)

    def metadata_bytes(self) -> int:
        return self.bitmap.nbytes + self.area.nbytes


# Compiled helpers take few arrays on purpose: every array argument of a
# numba call costs a handful of scalars to pass, which measured ~80 ns per call
# with six of them, 20 ns with two.

@numba.njit(cache=True, nogil=True)
def alloc_block(bitmap, area, nid, order):
    """``__rmqueue_smallest()`` + ``expand()``: one block's pfn, or -1 if none."""
    for k in range(order, NR_ORDERS):
        a = area[nid, k]
        if a.nr_free == 0:
            continue
        base = a.off
        i = a.hint
        while not bitmap[base + i]:  # nr_free > 0 and no free block below hint
            i += 1
        bitmap[base + i] = False
        a.nr_free -= 1
        a.hint = i + 1
        while k > order:  # expand(): keep the lower half, free the upper one
            k -= 1
            i *= 2
            b = area[nid, k]
            bitmap[b.off + i + 1] = True
            b.nr_free += 1
            if i + 1 < b.hint:
                b.hint = i + 1
        area[nid, order].nr_alloc += 1
        return area[nid, 0].start_pfn + (i << order)
    return -1


@numba.njit(cache=True, nogil=True)
def free_block(bitmap, area, nid, order, pfn):
    """``__free_one_page()``: free one block and merge it with free buddies."""
    i = (pfn - area[nid, 0].start_pfn) >> order
    k = order
    while k < NR_ORDERS - 1:
        base = area[nid, k].off
        if bitmap[base + i]:
            raise ValueError("double free of a block")
        if not bitmap[base + (i ^ 1)]:
            break
        bitmap[base + (i ^ 1)] = False
        area[nid, k].nr_free -= 1
        i >>= 1
        k += 1
    a = area[nid, k]
    if bitmap[a.off + i]:
        raise ValueError("double free of a block")
    bitmap[a.off + i] = True
    a.nr_free += 1
    if i < a.hint:
        a.hint = i


@numba.njit(cache=True, nogil=True)
def alloc_blocks(bitmap, area, nid, order, count, out):
    n = 0
    while n < count:
        pfn = alloc_block(bitmap, area, np.int64(nid), np.int64(order))
        if pfn < 0:
            break
        out[n] = pfn
        n += 1
    return n


@numba.njit(cache=True, nogil=True)
def free_blocks(bitmap, area, nid, order, pfns):
    for j in range(pfns.size):
        free_block(bitmap, area, np.int64(nid), np.int64(order), np.int64(pfns[j]))
