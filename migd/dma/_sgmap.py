"""``dma_map_sgtable()`` of a batch's two sides: how many entries each maps to.

RFC v6's DMA migrator (``setup_sg_tables()``) builds each side with ``sg_alloc_table()``
and one ``sg_set_folio(sg, folio, folio_size(folio), 0)`` per folio - no
merging at build time (``sg_alloc_table_from_pages_segment()``, which would
merge physically contiguous pages, is not used) - maps both, and gives the
batch back to the CPU with -EINVAL when ``src->nents != dst->nents``.

What the mapping returns (kernel/dma/mapping.c ``__dma_map_sg_attrs()``):

* no IOMMU, ``dma_direct_map_sg()``: every entry mapped on its own, ``nents``
  returned unchanged;
* through an IOMMU, ``iommu_dma_map_sg()`` (drivers/iommu/dma-iommu.c): the
  whole list gets ONE IOVA allocation, the entries laid out back to back in
  it, and ``__finalise_sg()`` concatenates an entry onto the open segment when
  it starts on an IOVA page (``!s_iova_off``: a folio's offset is 0), its IOVA
  is not on a segment boundary (``dma_get_seg_boundary()``: ULONG_MAX by
  default, and one size-aligned allocation never crosses a smaller boundary)
  and ``max_len - cur_len >= s_length`` in ``unsigned int``
  (``max_len = dma_get_max_seg_size()``, SZ_64K by default).  Physical
  addresses take no part: contiguity is in IOVA space, which is contiguous
  by construction.

So ``nents`` is a function of the entries' lengths alone, and the two sides of
a migration batch have the same lengths (the destination is allocated with
the source's order): the IOMMU merges them evenly, whatever the physical
layout - fresh, fragmented or compacted.  Only ``fail_iommu_merge`` makes them
differ.  The series' newest driver maps each folio on its own
(``map_folios()``: ``dma_map_page_attrs()``) and has no such comparison at all.

Rejected: merging by physical contiguity (what ``sg_alloc_table_from_pages()``
does when building a table, not what mapping one does; migd modelled that
before and counted 39% to 100% of batches as falling back where the kernel's
code gives none), and a fixed probability per batch (no layout in it).
"""

from __future__ import annotations

import numba
import numpy as np

from ..mm import PAGE_SIZE

#: ``unsigned int`` arithmetic of ``__finalise_sg()``.
_U32 = 1 << 32


@numba.njit(cache=True, nogil=True)
def _finalise_nents(orders, page_size, max_len):
    count = 0
    cur_len = 0
    for i in range(orders.size):
        s_length = page_size << orders[i]
        # cur_len && !s_iova_off && (dma_addr & seg_mask) && max_len - cur_len >= s_length
        if cur_len and (max_len - cur_len) % _U32 >= s_length:
            cur_len = (cur_len + s_length) % _U32
        else:
            cur_len = s_length
            count += 1
    return count


@numba.njit(cache=True, nogil=True)
def _finalise_slices(src_orders, dst_orders, bounds, page_size, max_len):
    """Each slice's two sides through ``_finalise_nents``: (the sources' nents
    summed, whether every slice's sides map to as many entries)."""
    total = 0
    even = True
    for c in range(bounds.shape[0]):
        lo, hi = bounds[c, 0], bounds[c, 1]
        nents = _finalise_nents(src_orders[lo:hi], page_size, max_len)
        even &= nents == _finalise_nents(dst_orders[lo:hi], page_size, max_len)
        total += nents
    return total, even


def sg_nents_slices(src_orders: np.ndarray, dst_orders: np.ndarray, bounds: np.ndarray,
                    max_seg_bytes: int, iommu: bool) -> tuple[int, bool]:
    """:func:`sg_nents` of both sides of each channel's slice (``bounds``, rows
    of ``[lo, hi)``) in one compiled pass, as ``setup_sg_tables()`` maps them:
    (the source sides' nents summed, whether each slice's two sides agree).
    One call per batch: two calls per slice cost 32 dispatches (~60 us) a
    batch of 16 channels, a tenth of the virtual clock's time."""
    if not iommu:
        return int(bounds[:, 1].sum() - bounds[:, 0].sum()), True
    total, even = _finalise_slices(src_orders.astype(np.int64), dst_orders.astype(np.int64),
                                   bounds, np.int64(PAGE_SIZE), np.int64(max_seg_bytes))
    return int(total), bool(even)


def sg_nents(orders: np.ndarray, max_seg_bytes: int, iommu: bool) -> int:
    """``nents`` that ``dma_map_sgtable()`` returns for one entry per folio of
    ``orders`` (offset 0): ``__finalise_sg()``'s count through an IOMMU with a
    ``max_seg_bytes`` segment limit, else (``dma_direct_map_sg()``) one per entry.

    ``max_len - cur_len`` wraps as the kernel's ``unsigned int`` does: after an
    entry longer than the limit (a 2 MiB folio against SZ_64K, which the DMA
    API assumes a caller never passes) every later entry is concatenated."""
    orders = np.asarray(orders, dtype=np.int64)
    if not iommu:
        return int(orders.size)
    return int(_finalise_nents(orders, np.int64(PAGE_SIZE), np.int64(max_seg_bytes)))
