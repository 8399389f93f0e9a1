"""dcbm as the series' newest iteration writes it (drivers/migrate_offload/dcbm/dcbm.c
after v6, an ``mm_offload_provider`` with ``copy_folios`` and ``clear_folio``).

What differs from v6 (``_dcbm``), followed function by function:

* ``dcbm_get_channels()`` / ``dcbm_put_channels()``: the channels are requested
  once, when offloading is enabled, and released when it is disabled
  (``offloading_param_set()``); ``nr_dma_chan`` is how many to request, so a
  write while offloading is -EBUSY (``nr_dma_chan_param_set()``).  They are
  grouped by DMA device as they enumerate (``struct dcbm_group``).
* ``dcbm_claim_channels()``: a batch claims up to ``min(nr_dma_chan, nr_folios,
  16)`` channels of ONE group by per-channel ``mutex_trylock()``
  (``dcbm_claim_group()``), groups on the destination node first, each pass
  from a rotating cursor (``dcbm_claim_pass()``); nothing free anywhere:
  -EBUSY, ``batches_refused``, the move loop copies the batch.  On PTDMA (one
  channel per device) a batch therefore gets one channel: concurrent batches
  spread over the devices instead of one batch taking them all.
* ``map_folios()``: one DMA mapping per folio against the group's device;
  ``submit_dma_transfers()`` throttles each channel to ``max_inflight``
  descriptors in flight (``dma_work_throttle()``) and, on an engine with
  DMA_MEMCPY_SG, submits scatter-gather transactions of ``sg_elems`` folios
  (``submit_sg_transfers()``: one submission cost per transaction);
  ``cache_ctrl`` adds DMA_PREP_CACHE_CONTROL.
* ``dma_work_wait()``: nothing is terminated; on an error every submitted
  descriptor runs out before the batch falls back, marking all-or-nothing.
* ``folio_clear_dma()``: see :func:`clear_folio`.

Rejected: rewriting ``_dcbm`` in place (v6 must stay selectable: the published
tables were measured with its cross-device claims), and a second migrator
name (every surface would have two dcbm's; ``variant`` is one parameter).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np
import trio

from ..dma import DmaChannel, DmaDevice, slice_bounds
from ..mm import FOLIO_CONTENT_COPIED
from ._dcbm_vclock import schedule_and_copy
from ._migrator import CopyBatch

#: ``[migrator.dcbm] variant``: the driver as RFC v6 posted it, or the newest.
VARIANTS = ("v6", "newest")
MAX_DMA_CHANNELS = 16
DCBM_SG_ELEMS_DEFAULT = 32
DCBM_MAX_INFLIGHT_DEFAULT = 32
#: FOLIO_ZERO_LOCALITY_RADIUS: pages either side of the fault cleared on the CPU.
DCBM_WARM_RADIUS = 2
#: One memset chunk per this many bytes when spreading a clear over channels.
DCBM_CLEAR_CHUNK_BYTES = 2 << 20
#: ``min_clear_bytes``' default: SZ_2M.
MIN_CLEAR_BYTES_DEFAULT = 2 << 20
#: The driver's ``unsigned int`` and ``unsigned long`` module parameters.
UINT_MAX = 2**32 - 1
ULONG_MAX = 2**64 - 1


@dataclass
class Group:
    """``struct dcbm_group``: the acquired channels of one DMA device."""

    device_name: str
    node: int
    chans: list[DmaChannel]


@dataclass
class _Work:
    """``struct dma_work``: one channel's slice, its descriptors in flight."""

    chan: DmaChannel
    lo: int
    hi: int
    pending: int = 0  # folios submitted, not completed
    failed: bool = False
    space: trio.Event = field(default_factory=trio.Event)


class NewestChannels:
    """The newest dcbm's channel table: acquired at enable, grouped, trylocked."""

    def __init__(self, device: DmaDevice) -> None:
        self.device = device
        self.groups: list[Group] = []
        self.locked: set[int] = set()  # chan_id of channels a batch holds
        self._cursor = 0

    @property
    def channels(self) -> list[DmaChannel]:
        return [c for g in self.groups for c in g.chans]

    def get(self, nr_dma_chan: int) -> None:
        """``dcbm_get_channels()``: ``dma_request_chan_by_mask(DMA_MEMCPY)`` up to
        ``nr_dma_chan`` times, grouped by device as they enumerate; an
        exclusive channel another client holds is skipped.  OSError ENODEV
        when none could be had."""
        exclusive = self.device.model.exclusive
        free = [c for c in self.device.channels if not (exclusive and c.client_count)]
        for c in free[:nr_dma_chan]:
            c.client_count += 1
            if not self.groups or self.groups[-1].device_name != c.device_name:
                # dev_to_node(): the emulated DMA devices sit with the CPUs, on node 0
                self.groups.append(Group(c.device_name, 0, []))
            self.groups[-1].chans.append(c)
        if not self.groups:
            raise OSError(errno.ENODEV, "no DMA memcpy channel to acquire")

    def put(self) -> None:
        """``dcbm_put_channels()``: ``dma_release_channel()`` of each."""
        for c in self.channels:
            c.client_count -= 1
        self.groups = []
        self.locked.clear()

    def claim(self, want: int, nid: int) -> tuple[Group, list[DmaChannel]] | None:
        """``dcbm_claim_channels()``: up to ``want`` channels of one group, groups
        on ``nid`` first; None when every channel is held (or ``fail_dma_busy``)."""
        if self.device.faults["fail_dma_busy"].should_fail():
            return None
        for match in (True, False):  # dcbm_claim_pass()
            sel = [g for g in self.groups if (g.node == nid) == match]
            if not sel:
                continue
            self._cursor += 1
            start = self._cursor % len(sel)
            for i in range(len(sel)):
                grp = sel[(start + i) % len(sel)]
                got = [c for c in grp.chans if c.chan_id not in self.locked][:want]
                if got:  # dcbm_claim_group(): mutex_trylock() of each
                    self.locked.update(c.chan_id for c in got)
                    return grp, got
        return None

    def release(self, chans: list[DmaChannel]) -> None:
        """``dcbm_release_channels()``."""
        self.locked.difference_update(c.chan_id for c in chans)

    def idle(self, chans: list[DmaChannel]) -> bool:
        """Nothing on the device but ``chans`` (claimed by the caller): the
        closed form's condition."""
        return (self.locked == {c.chan_id for c in chans}
                and not any(c.busy for c in self.device.channels))


def _transactions(n: int, elems: int) -> int:
    return -(-n // elems)


async def copy_folios(mig, batch: CopyBatch) -> int:
    """``folios_copy_dma()`` of the newest iteration; returns 0 or -errno."""
    nr = batch.nr_folios
    # map_folios() maps each folio on its own (dma_map_page_attrs()): no
    # scatterlist, no nents to compare, no -EINVAL for an uneven IOMMU merge.
    pool: NewestChannels = mig.channels
    want = min(mig.nr_dma_chan, nr, MAX_DMA_CHANNELS)
    # Prefer the device closest to where the copies are written.
    claim = pool.claim(want, int(batch.memory.nid_of[batch.dst[0]]))
    if claim is None:
        mig.device.batches_refused += 1
        return -errno.EBUSY
    _, chans = claim
    mig.note_claims([len(chans)])
    try:
        rc = await _copy(mig, batch, chans)
    finally:
        pool.release(chans)
    if rc:
        mig.folios_failures += nr
    else:
        mig.folios_migrated += nr
    return rc


async def _copy(mig, batch: CopyBatch, chans: list[DmaChannel]) -> int:
    model = mig.device.model
    nr = batch.nr_folios
    elems = mig.sg_elems if model.memcpy_sg else 1
    if mig.cache_ctrl:  # DMA_PREP_CACHE_CONTROL: the copies' lines stay in LLC
        mig.cache_footprint_bytes += batch.nr_bytes
    if (batch.closed_form and mig.channels.idle(chans)
            and all(_transactions(hi - lo, elems) <= mig.max_inflight
                    for lo, hi in slice_bounds(nr, len(chans)))
            and await _copy_closed_form(mig, batch, chans, elems)):
        return 0
    clock = batch.clock
    # map_folios(): two dma_map_page_attrs() per folio, CPU work before any descriptor
    await clock.spend(model.map_folio_us * nr * 1e-6)
    works = [_Work(ch, lo, hi) for ch, (lo, hi) in zip(chans, slice_bounds(nr, len(chans)),
                                                       strict=True)]
    all_done = trio.Event()
    left = [nr]
    order: list[np.ndarray] = []
    mig.completion_order = []

    def completer(work: _Work):
        def complete(cookie: np.ndarray, status: np.ndarray, residue: np.ndarray) -> None:
            """dma_completion_callback(): an error result fails the work."""
            order.append(cookie.copy())
            work.failed |= bool(np.any(status) or np.any(residue))
            work.pending -= cookie.size
            work.space.set()
            left[0] -= cookie.size
            if not left[0]:
                all_done.set()
        return complete

    cookies = np.arange(nr, dtype=np.int64)
    limit = mig.max_inflight * elems  # dma_work_throttle(), counted in folios
    submit = model.submit_us * 1e-6
    rc = 0
    try:
        # One deadline from the first submission: a descriptor that never
        # completes also keeps the throttle (or a full ring) from letting
        # the rest be submitted, and that wait is as unbounded as the last.
        with trio.move_on_after(mig.timeout):
            for w in works:  # submit_dma_transfers() channel by channel
                pos, cb = w.lo, completer(w)
                while pos < w.hi:
                    while w.pending + elems > limit:  # wait for completions
                        w.space = trio.Event()
                        await w.space.wait()
                    n = min(w.hi - pos, (limit - w.pending) // elems * elems)
                    await clock.spend(submit * _transactions(n, elems))  # prep + submit
                    w.pending += n
                    await w.chan.submit(batch.src[pos:pos + n], batch.dst[pos:pos + n],
                                        batch.orders[pos:pos + n], cookies[pos:pos + n], cb)
                    pos += n
            # dma_work_wait(): every submitted descriptor runs out, nothing terminated
            await all_done.wait()
        if not all_done.is_set():
            # A descriptor that never completes (fail_dma_timeout): the driver
            # would wait forever; migd terminates after ``timeout`` (README).
            for ch in chans:
                await ch.terminate_sync()
            rc = -errno.ETIMEDOUT
        elif any(w.failed for w in works):
            rc = -errno.EIO
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            for ch in chans:
                await ch.terminate_sync()
        raise
    mig.completion_order = np.concatenate(order) if order else []
    if not rc:  # all copied: every folio marked FOLIO_CONTENT_COPIED
        batch.memory.flags[batch.src] |= FOLIO_CONTENT_COPIED
    return rc


async def _copy_closed_form(mig, batch: CopyBatch, chans: list[DmaChannel],
                            elems: int) -> bool:
    """The same copy with one sleep, when nothing else is on the device and the
    throttle never binds (``migd.hw.dma_schedule``, as ``_dcbm_vclock``, with
    the newest's costs: no channel request, one submission per transaction)."""
    model = mig.device.model
    nr = batch.nr_folios
    k = len(chans)
    bounds = np.array(slice_bounds(nr, k), dtype=np.int64)
    steps = np.empty(k + 1)
    steps[0] = model.map_folio_us * nr * 1e-6
    per = bounds[:, 1] - bounds[:, 0]
    steps[1:] = (model.submit_us * 1e-6) * -(-per // elems)
    return await schedule_and_copy(mig, batch, chans, bounds, steps)
