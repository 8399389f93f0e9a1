"""A vectorised binary buddy allocator (mm/page_alloc.c), one per node.

The kernel keeps a free list per order.  migd keeps one boolean bitmap per
order instead (``free[k][i]``: the block of order ``k`` at index ``i`` is free).
That costs under two bits per base page, and it lets allocation and freeing of a
whole batch of folios run as a handful of numpy operations: migration allocates
up to 512 destination folios per batch, and a Python loop per folio would be the
bottleneck.  Free lists of Python ints were rejected because at millions of free
pages they alone would exceed the 64-bytes-per-page metadata budget.
"""

from __future__ import annotations

import numpy as np

from ._page import MAX_FOLIO_ORDER


class BuddyAllocator:
    """Naturally aligned blocks of ``nr_pages`` base pages, orders 0..MAX_FOLIO_ORDER.

    Block indices are node-relative and in units of the block's own order.
    """

    def __init__(self, nr_pages: int) -> None:
        top = 1 << MAX_FOLIO_ORDER
        if nr_pages <= 0 or nr_pages % top:
            raise ValueError(f"node size must be a positive multiple of {top} pages")
        self.nr_pages = nr_pages
        self._free = [np.zeros(nr_pages >> k, dtype=bool) for k in range(MAX_FOLIO_ORDER + 1)]
        self._free[MAX_FOLIO_ORDER][:] = True
        self._nr_free_blocks = [0] * MAX_FOLIO_ORDER + [nr_pages >> MAX_FOLIO_ORDER]
        self.nr_free_pages = nr_pages

    def alloc(self, order: int, count: int) -> np.ndarray:
        """Allocate up to ``count`` blocks of ``order``; returns their first pages.

        Like ``__rmqueue_smallest`` it takes the smallest free blocks that fit
        and splits larger ones (``expand``); fewer than ``count`` come back when
        the node runs out.
        """
        got: list[np.ndarray] = []
        need = count
        for k in range(order, MAX_FOLIO_ORDER + 1):
            if need == 0:
                break
            if self._nr_free_blocks[k] == 0:
                continue
            per_block = 1 << (k - order)
            blocks = np.flatnonzero(self._free[k])[: -(-need // per_block)]
            self._free[k][blocks] = False
            self._nr_free_blocks[k] -= blocks.size
            if per_block == 1:
                pieces = blocks
            else:
                pieces = (blocks[:, None] * per_block + np.arange(per_block)).ravel()
            got.append(pieces[:need])
            if pieces.size > need:  # expand(): the remainder goes back, re-merged
                self._release(order, pieces[need:])
            need -= min(need, pieces.size)
        if not got:
            return np.empty(0, dtype=np.int64)
        out = np.concatenate(got).astype(np.int64) << order
        self.nr_free_pages -= out.size << order
        return out

    def free(self, order: int, first_pages: np.ndarray) -> None:
        """Return blocks of ``order`` (given by first page) and merge buddies."""
        first_pages = np.asarray(first_pages, dtype=np.int64)
        if first_pages.size == 0:
            return
        if (first_pages & ((1 << order) - 1)).any():
            raise ValueError("freeing a block that is not naturally aligned")
        self._release(order, first_pages >> order)
        self.nr_free_pages += first_pages.size << order

    def _release(self, order: int, blocks: np.ndarray) -> None:
        """``__free_one_page`` for many blocks at once: mark free, merge upward."""
        for k in range(order, MAX_FOLIO_ORDER):
            if blocks.size == 0:
                return
            bitmap = self._free[k]
            if bitmap[blocks].any():
                raise ValueError(f"double free of an order-{k} block")
            buddies = blocks ^ 1
            buddy_was_free = bitmap[buddies]
            bitmap[blocks] = True
            self._nr_free_blocks[k] += blocks.size
            # A block merges if its buddy was free already, or if the buddy is
            # freed in this same call (then only the even one of the pair
            # carries the merge, so every parent appears once: no np.unique).
            merge = buddy_was_free | (bitmap[buddies] & ((blocks & 1) == 0))
            merged = blocks[merge] >> 1
            bitmap[2 * merged] = False
            bitmap[2 * merged + 1] = False
            self._nr_free_blocks[k] -= 2 * merged.size
            blocks = merged
        if blocks.size:
            top = self._free[MAX_FOLIO_ORDER]
            if top[blocks].any():
                raise ValueError("double free of a top-order block")
            top[blocks] = True
            self._nr_free_blocks[MAX_FOLIO_ORDER] += blocks.size

    def nr_free_blocks(self) -> list[int]:
        """Free blocks per order, as ``/proc/buddyinfo`` shows them."""
        return list(self._nr_free_blocks)

    def metadata_bytes(self) -> int:
        return sum(b.nbytes for b in self._free)
