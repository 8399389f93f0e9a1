"""A batch's DMA time in closed form: the channels' schedule, computed at once.

On the virtual clock a channel (``migd.dma``) runs its queue in chunks of
``RATE_CHUNK`` descriptors; at the start of each chunk it looks at which
channels are busy (``sharing`` on its engine, ``active`` on the device), takes
its bandwidth share from that, sleeps the chunk's modelled time and completes
it.  When one batch alone uses the device (no other batch in flight, no fault
armed), nothing else changes which channels are busy, so the whole schedule
follows from the batch itself: the times the client submits to each channel
and the descriptors' sizes.  :func:`dma_schedule` replays that event by event
without the event loop — the same chunks, the same busy sets, the same
additions in the same order — and the client sleeps once, to the end.

Stepping the event loop instead was far slower than real time (docs/design.md,
"The DMA schedule"); the schedule is ~128 events per 512-folio batch in
compiled code.  Rejected: an analytic
fluid model (every channel's share as a function of time) - it would not
give the step-by-step chunks' rounding and the two paths would disagree.
"""

from __future__ import annotations

import numba
import numpy as np

from ..mm import PAGE_SIZE
from ._profile import DmaModel


@numba.njit(cache=True, nogil=True)
def chunk_share(c, busy, engine, walk_us, chan_gbps, engine_gbps, membus_gbps):
    """What channel ``c``'s next chunk gets while the channels ``busy`` run:
    (its rate in GB/s, ``min(engine_gbps / sharing, membus_gbps / active)``
    capped at ``chan_gbps`` (``DmaModel.rate_gbps``), and each mapped page's
    wait for the IOMMU's one walker, ``DmaModel.walk_wait``).  One function for
    :func:`dma_schedule` and the fit's closed-form cells."""
    sharing = 0
    active = 0
    for x in range(busy.size):
        if busy[x]:
            active += 1
            if engine[x] == engine[c]:
                sharing += 1
    rate = min(engine_gbps / max(sharing, 1), membus_gbps / max(active, 1))
    if chan_gbps > 0:
        rate = min(rate, chan_gbps)
    return rate, walk_us * max(active - 1, 0) * 1e-6


@numba.njit(cache=True, nogil=True)
def _schedule(t_sub, engine, orders, rate_chunk, fixed_us, walked, walk_us, chan_gbps, engine_gbps,
              membus_gbps, t_done, t_end):
    k = t_sub.size
    nr = orders.size
    lo = np.empty(k, dtype=np.int64)
    hi = np.empty(k, dtype=np.int64)
    chunk = np.empty(k, dtype=np.int64)
    for c in range(k):  # the RFC's contiguous split (dma.slice_bounds)
        lo[c] = nr * c // k
        hi[c] = nr * (c + 1) // k
        chunk[c] = max(1, min(rate_chunk, (hi[c] - lo[c]) // 8))
    fixed = np.empty(nr, dtype=np.float64)
    nbytes = np.empty(nr, dtype=np.float64)
    mapped = np.empty(nr, dtype=np.float64)
    for i in range(nr):  # DmaModel.desc_seconds without the shared terms
        nb = PAGE_SIZE << orders[i]
        mapped[i] = walked[orders[i]]
        fixed[i] = fixed_us[orders[i]] * 1e-6
        nbytes[i] = nb
    nxt = t_sub.copy()  # each channel's next event: its start, then its chunk's end
    pos = lo.copy()  # first descriptor of the chunk in flight (or the next one)
    cend = lo.copy()  # end of the chunk in flight
    started = np.zeros(k, dtype=np.bool_)
    busy = np.zeros(k, dtype=np.bool_)
    done = np.zeros(k, dtype=np.bool_)
    while True:
        c = np.int64(-1)  # not a literal: chunk_share is compiled for one type
        best = np.inf
        for x in range(k):
            if not done[x] and nxt[x] < best:
                best = nxt[x]
                c = x
        if c < 0:
            return
        t = nxt[c]
        if not started[c]:
            started[c] = True
            busy[c] = True  # submitted: its queue is not empty
        else:
            for i in range(pos[c], cend[c]):
                t_done[i] = t
            pos[c] = cend[c]
            if pos[c] == hi[c]:
                busy[c] = False
                done[c] = True
                t_end[c] = t
                continue
        rate, wait = chunk_share(c, busy, engine, walk_us, chan_gbps, engine_gbps, membus_gbps)
        e = min(pos[c] + chunk[c], hi[c])
        acc = 0.0
        for i in range(pos[c], e):
            acc += fixed[i] + wait * mapped[i] + nbytes[i] / (rate * 1e9)
        cend[c] = e
        nxt[c] = t + acc


def dma_schedule(model: DmaModel, t_submit: np.ndarray, engines: np.ndarray,
                 orders: np.ndarray, rate_chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """When each descriptor completes and when each channel goes idle.

    Channel ``c`` (on engine ``engines[c]``) gets its contiguous slice of a
    batch of folios of ``orders`` (``dma.slice_bounds``) at ``t_submit[c]``,
    and every other channel of the device is idle.  A channel runs its queue
    in chunks of ``max(1, min(rate_chunk, n // 8))`` at the share
    ``min(engine_gbps / sharing, membus_gbps / active)`` seen when the chunk
    starts; a descriptor costs ``DmaModel.desc_seconds``.  Returns
    ``(t_done per descriptor, t_end per channel)``.
    """
    t_done = np.empty(orders.size, dtype=np.float64)
    t_end = np.empty(t_submit.size, dtype=np.float64)
    orders = np.asarray(orders, dtype=np.int64)
    fixed_us, walked = model.per_order
    _schedule(t_submit, engines, orders, rate_chunk, fixed_us, walked,
              float(model.iommu_walk_us), float(model.chan_gbps), float(model.engine_gbps),
              float(model.membus_gbps), t_done, t_end)
    return t_done, t_end
