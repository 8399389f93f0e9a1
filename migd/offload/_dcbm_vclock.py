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

from ..dma import DmaChannel, slice_bounds_array
from ..hw import dma_schedule, quiet_for
from ._migrator import CopyBatch


def fits(device, chans: list[DmaChannel], nr_folios: int) -> bool:
    """Nothing else on the device: no channel busy, none claimed but ours (each
    of ours claimed once: by this batch), and every slice fits its ring (a
    full ring makes the client wait on the channel, which only the
    step-by-step path models)."""
    ring = device.model.ring_size
    if ring and -(-nr_folios // len(chans)) > ring:
        return False
    claimed = 0
    for c in device.channels:  # a plain loop: three generators cost 10 us a batch
        if c.busy:
            return False
        claimed += c.client_count
    return claimed == len(chans) and all(c.client_count == 1 for c in chans)


async def copy_closed_form(migrator, batch: CopyBatch, chans: list[DmaChannel]
                           ) -> int | None:
    """The batch copy of ``DcbmMigrator._copy`` with one sleep; returns 0, or
    None (nothing done) when another task could run before the copy ends:
    one runnable now, or one whose sleep ends first.  Such a task could call
    the engine and claim channels mid-copy, changing the bus share the
    schedule assumed; the step-by-step copy then models it."""
    model = migrator.device.model
    nr = batch.nr_folios
    k = len(chans)
    bounds = slice_bounds_array(nr, k)
    setup = (model.chan_request_us * k + model.map_folio_us * nr) * 1e-6
    # the channel requests and mappings, then each channel's slice prepared
    # and submitted on the CPU (slept with the copy: nothing changes meanwhile)
    steps = np.empty(k + 1)
    steps[0] = setup
    steps[1:] = (model.submit_us * 1e-6) * (bounds[:, 1] - bounds[:, 0])
    return 0 if await schedule_and_copy(migrator, batch, chans, bounds, steps) else None


async def schedule_and_copy(migrator, batch: CopyBatch, chans: list[DmaChannel],
                            bounds: np.ndarray, steps: np.ndarray) -> bool:
    """The channels' schedule at once (``migd.hw.dma_schedule``) from
    ``steps`` (seconds: the CPU's setup, then each channel's submission,
    in order); False, nothing done, when another task could run before it
    ends; else one sleep to its end, the folios copied, each channel's slice
    booked, the completion order set.  Shared by both variants' closed forms."""
    model = migrator.device.model
    steps = steps.copy()
    steps[0] += trio.current_time()
    t_submit = np.cumsum(steps)[1:]
    t_done, t_end = dma_schedule(model, t_submit, np.array([c.engine for c in chans]),
                                 batch.orders, DmaChannel.RATE_CHUNK)
    end = float(t_end.max())
    if not quiet_for(end - trio.current_time()):
        return False
    await batch.clock.sleep_until(end)
    batch.memory.copy_folios(batch.dst, batch.src, batch.orders)
    migrator.device.book_slices(chans, bounds[:, 0].copy(),  # + the cgroups'
                                bounds[:, 1].copy(), t_end - t_submit,
                                batch.src, batch.orders)
    migrator.completed_at(t_done)
    migrator.closed_form_batches += 1
    return True
