"""The books of a batch copied by many channels at once, in one compiled call.

The virtual clock's closed-form DMA copy (``offload._dcbm_vclock``) ends by
doing at once what the channels would have done slice by slice: mark every
folio FOLIO_CONTENT_COPIED, count each channel's bytes, and charge its busy
seconds to the cgroups of the folios it copied (``DmaDevice.charge()``: split
by bytes, a bincount).  Sixteen ``charge()`` calls and the numpy around them
cost ~60 us per batch, as much as the rest of the copy.  Here the same
arithmetic in the same order, per channel: the same floats.  Rejected: one
bincount over all channels (another summation order, another float).
"""

from __future__ import annotations

import numba

from ..mm import FOLIO_CONTENT_COPIED, PAGE_SIZE


@numba.njit(cache=True, nogil=True)
def book_slices(mem_map, src, orders, lo, hi, seconds, owner_busy, acc, sent):
    """Channel ``c`` copied ``src[lo[c]:hi[c]]`` (folios of ``orders``) in
    ``seconds[c]``: mark the folios copied, put each slice's bytes in
    ``sent[c]``, and charge ``seconds[c]`` to the folios' cgroups
    (``mapping``, -1 for none: index ``owner + 1`` of ``owner_busy``) by
    bytes, as ``charge()`` does: each cgroup's shares summed in folio order
    from 0.0, then added to its total, channel after channel.  ``acc``:
    scratch as long as ``owner_busy``.  Returns 0; or, with nothing done, the
    length ``owner_busy`` needs (> 0), or -1 for what ``charge()`` treats
    otherwise (an empty slice, no time)."""
    need = 0
    for i in range(src.size):
        need = max(need, mem_map[src[i]].mapping + 2)
    if need > owner_busy.size:
        return need
    for c in range(lo.size):
        if hi[c] <= lo[c] or not seconds[c] > 0:
            return -1
    for i in range(src.size):
        mem_map[src[i]].flags |= FOLIO_CONTENT_COPIED
    for c in range(lo.size):
        total = 0
        for i in range(lo[c], hi[c]):
            total += PAGE_SIZE << orders[i]
        sent[c] = total
        ftotal = float(total)
        acc[:] = 0.0
        for i in range(lo[c], hi[c]):
            acc[mem_map[src[i]].mapping + 1] += (PAGE_SIZE << orders[i]) / ftotal * seconds[c]
        for j in range(owner_busy.size):
            owner_busy[j] += acc[j]
    return 0
