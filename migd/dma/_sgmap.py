"""``dma_map_sgtable()`` through an IOMMU: how many entries a folio list maps to.

A DMA migrator (the RFC's driver) builds one scatterlist entry per folio on
each side (``setup_sg_tables()``) and maps both; the IOMMU's
``iommu_dma_map_sg()`` may merge adjacent entries (``__finalise_sg()``), so a
side's ``nents`` can come back smaller than the folio count, and not by the
same amount on both sides.  The driver pairs entries one to one, so when
``src.nents != dst.nents`` it gives the batch back to the CPU with -EINVAL
(Gregory Price's follow-up on the RFC).

Model: an entry merges into the previous one when the two are physically
contiguous and the merged segment stays within the device's maximum segment
size (``dma_get_max_seg_size()``, 64 KiB by default).  Profiles whose engine
maps through an IOMMU say so (``DmaModel.iommu``); ``fail_iommu_merge``
forces an uneven merge on any profile.  Rejected: a fixed probability per
batch (it would not follow the layout: fresh, compacted and long-fragmented
nodes merge differently, which is what the question asks).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def sg_nents(pfns, orders, max_seg_pages):
    """Entries a list of folios (head ``pfns``, ``orders``) maps to once
    physically contiguous neighbours are merged up to ``max_seg_pages``."""
    n = pfns.size
    if n == 0:
        return 0
    nents = 1
    seg = 1 << orders[0]
    for i in range(1, n):
        pages = 1 << orders[i]
        if pfns[i] == pfns[i - 1] + (1 << orders[i - 1]) and seg + pages <= max_seg_pages:
            seg += pages
        else:
            nents += 1
            seg = pages
    return nents


def uneven_merge(src: np.ndarray, dst: np.ndarray, orders: np.ndarray,
                 max_seg_pages: int) -> bool:
    """Whether mapping ``src`` and ``dst`` gives different ``nents``."""
    return sg_nents(src, orders, max_seg_pages) != sg_nents(dst, orders, max_seg_pages)
