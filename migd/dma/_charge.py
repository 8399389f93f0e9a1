"""Channel time charged to cgroups, for many channels' slices in one compiled call.

``DmaDevice.charge()`` splits one channel's busy seconds over the cgroups of
the folios it copied, by bytes (a bincount).  The virtual clock's closed-form
DMA copy books every channel of a batch at once; sixteen ``charge()`` calls
cost ~45 us of numpy per batch, as much as the rest of the copy.  Here the
same arithmetic, in the same order, per channel: the same floats.  Rejected:
one bincount over all channels (a different summation order, another float).
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def charge_slices(owner_busy, acc, lo, hi, seconds, owners, sizes):
    """For each slice ``c``: ``seconds[c]`` split over ``owners[lo[c]:hi[c]]``
    (cgroup ids, -1 for none: index ``owner + 1`` of ``owner_busy``) by
    ``sizes`` (bytes, integers), added to ``owner_busy`` as ``charge()``
    adds it: each cgroup's shares summed in folio order from 0.0, then added
    to its total, channel after channel.  ``acc``: scratch as long as
    ``owner_busy``, which holds every owner.  Returns False, nothing charged,
    for what ``charge()`` treats otherwise (an empty slice, no time, no bytes)."""
    for c in range(lo.size):
        if hi[c] <= lo[c] or not seconds[c] > 0:
            return False
        total = 0
        for i in range(lo[c], hi[c]):
            total += sizes[i]
        if total <= 0:
            return False
    for c in range(lo.size):
        total = 0
        for i in range(lo[c], hi[c]):
            total += sizes[i]
        ftotal = float(total)
        acc[:] = 0.0
        for i in range(lo[c], hi[c]):
            acc[owners[i] + 1] += sizes[i] / ftotal * seconds[c]
        for j in range(owner_busy.size):
            owner_busy[j] += acc[j]
    return True
