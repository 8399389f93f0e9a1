"""dcbm's batch copy on the virtual clock in closed form (see ``migd.hw._dmacost``).

The step-by-step copy (``DcbmMigrator._copy``) charges the CPU's channel
requests and mappings, submits each channel's slice after its prep time, and
lets every channel task sleep chunk by chunk; the client wakes when the last
channel completes.  When the batch is alone on the device (``fits``), the
same times follow from :func:`migd.hw.dma_schedule`: the client charges the
same CPU costs, computes every descriptor's completion, sleeps once to the
last one, then moves the bytes, marks every folio FOLIO_CONTENT_COPIED and
books the channels' counters and the completion order as the channels would
have.  No fault can fire (none is armed), so every descriptor completes
cleanly and v6's all-or-nothing marking marks all.
"""

from __future__ import annotations

import numpy as np
import trio

from ..dma import DmaChannel, slice_bounds
from ..hw import dma_schedule
from ..mm import FOLIO_CONTENT_COPIED, PAGE_SIZE
from ._migrator import CopyBatch


def fits(device, chans: list[DmaChannel], nr_folios: int) -> bool:
    """Nothing else on the device: no channel busy, none claimed by another
    client, and every slice fits its ring (a full ring makes the client wait
    on the channel, which only the step-by-step path models)."""
    ring = device.model.ring_size
    if ring and -(-nr_folios // len(chans)) > ring:
        return False
    mine = {id(c) for c in chans}
    return not any(c.busy or (c.client_count and id(c) not in mine) for c in device.channels)


async def copy_closed_form(migrator, batch: CopyBatch, chans: list[DmaChannel]) -> int:
    """The batch copy of ``DcbmMigrator._copy`` with one sleep; returns 0."""
    model = migrator.device.model
    clock = batch.clock
    nr = batch.nr_folios
    bounds = slice_bounds(nr, len(chans))
    setup = (model.chan_request_us * len(chans) + model.map_folio_us * nr) * 1e-6
    await clock.spend(setup)
    t_submit = np.empty(len(chans))
    t = trio.current_time()
    submit = model.submit_us * 1e-6
    for k, (lo, hi) in enumerate(bounds):
        t += submit * (hi - lo)  # prep + submit of channel k's slice on the CPU
        t_submit[k] = t
    t_done, t_end = dma_schedule(model, t_submit, bounds,
                                 np.array([c.engine for c in chans]), batch.orders,
                                 DmaChannel.RATE_CHUNK)
    await trio.sleep_until(float(t_end.max()))
    mem = batch.memory
    mem.copy_folios(batch.dst, batch.src, batch.orders)
    mem.flags[batch.src] |= FOLIO_CONTENT_COPIED
    nbytes = PAGE_SIZE * np.left_shift(1, batch.orders.astype(np.int64))
    for c, (lo, hi), start, end in zip(chans, bounds, t_submit.tolist(), t_end.tolist(),
                                       strict=True):
        c.memcpy_count += hi - lo
        c.bytes_transferred += int(nbytes[lo:hi].sum())
        c.busy_seconds += end - start
    migrator.completion_order = np.argsort(t_done, kind="stable").tolist()
    migrator.closed_form_batches += 1
    return 0
