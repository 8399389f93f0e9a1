"""An emulated dmaengine (drivers/dma/dmaengine.c and a memcpy-capable driver).

A :class:`DmaDevice` has channels; each :class:`DmaChannel` is a trio task that
consumes the descriptors submitted to it, in order, and completes them in
ranges: the client's callback (``dmaengine_result``: status and residue per
descriptor) runs once per completed range, not once per descriptor.  Channels
run independently, so completions across channels arrive in any order.

Real clock: the channel copies the bytes itself, off the event loop — all the
descriptors it has queued in one hand-off to its own thread, one GIL-free
compiled copy of the whole slice — and, unless the profile is ``native``,
holds each chunk until its modelled completion time.  Virtual clock: the
channel sleeps the modelled time and moves the one-word pages inline; no
thread is ever waited on.

Faults (``fail_dma_*``) act here, where hardware fails, per descriptor and
decided when the channel takes its queue (``should_fail_many``): a descriptor
that completes with an error, one that completes short (residue), one that
never completes (the client's wait times out and it terminates the channel).
"""

from __future__ import annotations

import errno
import functools
from dataclasses import dataclass

import numpy as np
import trio

from ..faults import FaultInjector
from ..hw import Clock, DmaModel
from ..mm import FOLIO_CONTENT_COPIED, PAGE_SIZE, PhysMemory, copy_folio_prefixes, copy_folios
from ._chanctl import new_ctl
from ._charge import book_slices
from ._ring import DescRing, RangeCallback
from ._sgmap import sg_nents_slices
from ._thread import CopyThread


@dataclass
class ChannelStatistics:
    memcpy_count: int
    bytes_transferred: int
    in_use: bool
    busy_seconds: float
    #: ``chan->client_count``, what the kernel's ``class/dma/*/in_use`` prints.
    client_count: int = 0


#: CPUs the find_channel table spreads callers over (this machine's 2).
FIND_CHANNEL_CPUS = 2


class DmaChannel:
    """``struct dma_chan``: an async worker consuming descriptors in order."""

    def __init__(self, device: DmaDevice, chan_id: int) -> None:
        self.device = device
        self.chan_id = chan_id
        per_dev = device.model.channels_per_device or device.model.nr_channels
        #: The kernel's name: ``dma<device>chan<channel of that device>``
        #: (PTDMA: one channel per PT device, so dma0chan0 .. dma15chan0).
        self.device_name = f"dma{device.dev_id + chan_id // per_dev}"
        self.index = chan_id % per_dev  # the channel's number within its device
        self.name = f"{self.device_name}chan{self.index}"
        self.engine = chan_id // device.model.channels_per_engine
        self.memcpy_count = 0
        self.bytes_transferred = 0
        self.busy_seconds = 0.0
        #: ``chan->client_count``: clients holding the channel (an exclusive,
        #: DMA_PRIVATE channel has at most one).
        self.client_count = 0
        self.ring = DescRing(device.model.ring_size)
        self._thread = CopyThread(f"migd-{self.name}", device.ctl[chan_id])
        self._wakeup = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._generation = 0  # bumped by terminate: drops what was queued before
        self._ring_space = trio.Event()
        self._running = False  # the worker task runs (and stops the thread when it ends)

    @property
    def in_use(self) -> bool:
        return self.client_count > 0

    @property
    def queued(self) -> int:
        """Descriptors submitted and not yet completed (or dropped)."""
        return len(self.ring)

    @property
    def busy(self) -> bool:
        return bool(len(self.ring)) or not self._idle.is_set()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self.memcpy_count, self.bytes_transferred, self.in_use,
                                 self.busy_seconds, self.client_count)

    async def submit(self, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
                     cookie: np.ndarray, callback: RangeCallback) -> None:
        """``dmaengine_submit()`` of one descriptor per folio ``src[i] -> dst[i]``
        + ``dma_async_issue_pending()``; ``callback`` gets each completed range.

        With a descriptor ring (``ring_size``), waits for room as the channel
        completes earlier descriptors, as a full ring makes a driver wait.
        """
        ring = self.device.model.ring_size
        lo, n = 0, int(src.size)
        while lo < n:
            if ring:
                while len(self.ring) >= ring:
                    # one event for every waiting submitter: replacing it per
                    # waiter would leave the earlier ones waiting forever
                    if self._ring_space.is_set():
                        self._ring_space = trio.Event()
                    await self._ring_space.wait()
                hi = min(n, lo + ring - len(self.ring))
            else:
                hi = n
            self.ring.push(src[lo:hi], dst[lo:hi], order[lo:hi], cookie[lo:hi], callback)
            lo = hi
            self._wakeup.set()

    def account(self, descs: int, nbytes: int, seconds: float,
                owners: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        """Descriptors completed, bytes moved and busy time, booked at once by
        a copy that bypassed :meth:`run` (the virtual clock's closed form, the
        real clock's compiled posts); ``owners``: the cgroups of the folios
        copied, charged the time in proportion to ``weights`` (their bytes)."""
        self.memcpy_count += descs
        self.bytes_transferred += nbytes
        self.busy_seconds += seconds
        self.device.charge(seconds, owners, weights)

    def prepare_compiled_posts(self) -> bool:
        """The channel's task running with nothing queued or in flight, and its
        copy thread started: slices may be posted to it from compiled code
        (``_chanctl.dma_chan_post``), which then owns the channel until it
        returns.  Never while the task is not running: it is what stops the
        thread."""
        if not self._running or self.busy:
            return False
        try:
            self._thread.start()
        except RuntimeError:  # the old thread lingers: the general path waits for it
            return False
        return True

    async def terminate_sync(self) -> None:
        """``dmaengine_terminate_sync()``: drop queued descriptors (no callback)
        and wait until nothing of this channel is in flight."""
        self._generation += 1
        self.ring.clear()
        self._ring_space.set()
        self._wakeup.set()
        await self._idle.wait()

    async def run(self) -> None:
        """The channel's worker loop."""
        self._running = True
        try:
            while True:
                if not len(self.ring):
                    self.ring.rewind()
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                self._idle = trio.Event()
                try:
                    await self._process(len(self.ring), self._generation)
                finally:
                    self._idle.set()
        finally:
            self._running = False
            self._thread.stop()

    #: At most this many descriptors complete together (and run at one rate
    #: before the engine/bus sharing is re-evaluated); never more than an
    #: eighth of what is queued, so small batches complete descriptor by
    #: descriptor and large ones stay cheap to simulate.  Modelled profiles
    #: only: ``native`` on the real clock completes what it took in one range.
    RATE_CHUNK = 64

    async def _process(self, total: int, generation: int) -> None:
        """Run the ``total`` oldest descriptors: faults decided, bytes moved,
        modelled times held, completed in ranges."""
        dev = self.device
        model = dev.model
        faults = dev.faults
        n = total
        hang = faults["fail_dma_timeout"].should_fail_many(n)
        error = faults["fail_dma_desc"].should_fail_many(n)
        short = faults["fail_dma_partial"].should_fail_many(n)
        if hang.any():  # that descriptor never completes: stop before it
            n = int(np.flatnonzero(hang)[0])
        src, dst, order = self.ring.front(n)
        nbytes = np.left_shift(np.int64(PAGE_SIZE), order.astype(np.int64))
        error, short = error[:n], short[:n]
        clean = not (error.any() or short.any())
        moved = nbytes if clean else np.where(error, 0, np.where(short, nbytes // 2, nbytes))
        status = 0 if clean else np.where(error, -errno.EIO, 0).astype(np.int32)
        residue = 0 if clean else nbytes - moved
        if not clean and not model.reports_errors:
            # the driver invokes the callback with no result: DMA_TRANS_NOERROR
            # whatever happened, so the client believes every byte arrived
            dev.unreported(self.name, int((error | short).sum()))  # a descriptor once
            status = np.zeros(n, dtype=np.int32)
            residue = np.zeros(n, dtype=np.int64)
        start = trio.current_time()
        if not dev.clock.virtual and n:  # real bytes, off the event loop, one hand-off
            await self._thread.run(dev.copy, src, dst, order, moved, clean)
        if not dev.clock.virtual and model.native:
            chunk = max(n, 1)  # nothing modelled: all of it completes at once
        else:
            chunk = max(1, min(self.RATE_CHUNK, n // 8))
        t = start
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            if dev.clock.virtual or not model.native:
                sharing = sum(1 for c in dev.channels if c.engine == self.engine and c.busy)
                active = sum(1 for c in dev.channels if c.busy)
                t += model.descs_seconds(nbytes[lo:hi], order[lo:hi], sharing, active)
                await trio.sleep_until(t)
            # native, real clock: one range, right after the copy's wait
            if generation != self._generation:
                return  # terminated meanwhile: dropped without callback
            if dev.clock.virtual:
                dev.copy(src[lo:hi], dst[lo:hi], order[lo:hi], moved[lo:hi], clean)
            self.memcpy_count += hi - lo
            self.bytes_transferred += int(moved[lo:hi].sum())
            self.ring.complete(hi - lo, status if clean else status[lo:hi],
                               residue if clean else residue[lo:hi])
            self._ring_space.set()
        busy = trio.current_time() - start
        self.busy_seconds += busy
        if n:
            dev.charge(busy, dev.memory.mem_map["mapping"][src], nbytes)
        while n < total and generation == self._generation:
            # a hung descriptor holds the channel until it is terminated
            self._wakeup = trio.Event()
            await self._wakeup.wait()


class DmaDevice:
    """A DMA device with ``model.nr_channels`` memcpy channels."""

    def __init__(self, dev_id: int, memory: PhysMemory, clock: Clock, model: DmaModel,
                 faults: FaultInjector) -> None:
        self.dev_id = dev_id
        self.memory = memory
        self.clock = clock
        self.model = model
        self.faults = faults
        #: Each channel's copy-thread control row (``_chanctl``).
        self.ctl = new_ctl(model.nr_channels)
        self.channels = [DmaChannel(self, i) for i in range(model.nr_channels)]
        self.batches_refused = 0
        #: Descriptors that failed or completed short on an engine that does not
        #: report it (``DmaModel.reports_errors`` False): their folios were
        #: marked copied; only the integrity check can find them.
        self.unreported_errors = 0
        self._unreported_listeners: list = []
        #: Batches whose source and destination mapped to different ``nents``
        #: (``map_sgtables``).
        self.sg_mismatches = 0
        #: Folio entries mapped by ``map_sgtables`` and the segments (source
        #: ``nents``) they came back as: the IOMMU's merging, even or not.
        self.sg_entries = 0
        self.sg_segments = 0
        self._cpu = -1  # the last requesting CPU (find_channel)
        #: Busy seconds charged per cgroup: index ``owner + 1`` (0: no owner).
        self._owner_busy = np.zeros(1)

    def subscribe_unreported(self, listener) -> object:
        """Call ``listener(channel, nr_descriptors)`` whenever descriptors fail
        or complete short unreported; returns the unsubscribe function.  The
        device does no I/O: the daemon logs it and the collector exports the
        count (``migd_dma_unreported_errors``)."""
        self._unreported_listeners.append(listener)
        return lambda: self._unreported_listeners.remove(listener)

    def unreported(self, channel: str, n: int) -> None:
        """``n`` descriptors of ``channel`` went wrong with no error reported."""
        self.unreported_errors += n
        for listener in list(self._unreported_listeners):
            listener(channel, n)

    def charge(self, seconds: float, owners: np.ndarray | None,
               weights: np.ndarray | None) -> None:
        """Charge ``seconds`` of channel time to the cgroups ``owners`` of the
        folios copied (``folio_memcg()``: the tenant, -1 for none), split by
        ``weights`` (their bytes); unattributed without owners."""
        if owners is None or not len(owners) or seconds <= 0:
            self._owner_busy[0] += max(seconds, 0.0)
            return
        idx = np.asarray(owners, dtype=np.int64) + 1
        w = np.asarray(weights, dtype=np.float64)
        total = float(w.sum())
        w = w / total if total > 0 else np.full(idx.size, 1.0 / idx.size)
        add = np.bincount(idx, weights=w * seconds)
        if add.size > self._owner_busy.size:
            self._owner_busy = np.concatenate(
                [self._owner_busy, np.zeros(add.size - self._owner_busy.size)])
        self._owner_busy[:add.size] += add

    def book_slices(self, chans: list[DmaChannel], lo: np.ndarray, hi: np.ndarray,
                    seconds: np.ndarray, src: np.ndarray, orders: np.ndarray) -> None:
        """Channel ``chans[c]`` copied the folios ``src[lo[c]:hi[c]]`` in
        ``seconds[c]``, bypassing :meth:`DmaChannel.run` (the virtual clock's
        closed form): the folios marked FOLIO_CONTENT_COPIED and each channel
        booked as ``account()`` books it, all at once (``_charge``: the same
        floats).  ``lo``/``hi`` contiguous int64, as ``warm_up()`` compiles it."""
        mem_map = self.memory.mem_map
        sent = np.empty(lo.size, dtype=np.int64)
        rc = book_slices(mem_map, src, orders, lo, hi, seconds, self._owner_busy,
                         np.empty(self._owner_busy.size), sent)
        if rc > 0:  # a cgroup beyond the books: grow them, then book
            self._owner_busy = np.concatenate(
                [self._owner_busy, np.zeros(rc - self._owner_busy.size)])
            rc = book_slices(mem_map, src, orders, lo, hi, seconds, self._owner_busy,
                             np.empty(self._owner_busy.size), sent)
        if rc < 0:  # what account() books otherwise (an empty slice): channel by channel
            self.memory.flags[src] |= FOLIO_CONTENT_COPIED
            owners = mem_map["mapping"][src]
            sizes = PAGE_SIZE * np.left_shift(1, orders.astype(np.int64))
            for c, a, b, t in zip(chans, lo.tolist(), hi.tolist(), seconds.tolist(),
                                  strict=True):
                c.account(b - a, int(sizes[a:b].sum()), t, owners[a:b], sizes[a:b])
            return
        for c, d, nb, t in zip(chans, (hi - lo).tolist(), sent.tolist(), seconds.tolist(),
                               strict=True):
            c.memcpy_count += d
            c.bytes_transferred += nb
            c.busy_seconds += t

    def busy_by_owner(self, owner: int) -> float:
        """Channel seconds charged to cgroup ``owner`` (-1: unattributed)."""
        i = owner + 1
        return float(self._owner_busy[i]) if i < self._owner_busy.size else 0.0

    async def run(self) -> None:
        """Run every channel's worker until cancelled."""
        async with trio.open_nursery() as nursery:
            for ch in self.channels:
                nursery.start_soon(ch.run)

    def request_channels(self, count: int) -> list[DmaChannel]:
        """``dma_request_chan_by_mask(DMA_MEMCPY)`` up to ``count`` times.

        Exclusive channels (``model.exclusive``: PTDMA and DSA, requested as
        DMA_PRIVATE) go to one client at a time: a request takes the free
        ones in order, possibly fewer than ``count`` while another batch
        holds some, and OSError EBUSY is raised when none is free (the batch
        is refused, as the RFC's DMA migrator refuses it).
        Shared channels (``native``) are always granted.  On an engine
        without DMA_PRIVATE (SDXI, ``model.find_channel``) the client takes
        what ``dma_find_channel()`` gives: one channel, the calling CPU's,
        shared with every other client (never EBUSY, never claimed).
        """
        if self.faults["fail_dma_busy"].should_fail():
            raise OSError(errno.EBUSY, "no DMA channel available (injected)")
        if self.model.find_channel:
            # dma_find_channel(DMA_MEMCPY): the calling CPU's entry of the
            # channel table (dma_channel_rebalance() spreads the CPUs over the
            # channels); callers come from CPUs in turn.  One channel, shared.
            self._cpu = (self._cpu + 1) % FIND_CHANNEL_CPUS
            chans = [self.channels[self._cpu % len(self.channels)]]
        elif not self.model.exclusive:
            chans = self.channels[:count]
        else:
            chans = [c for c in self.channels if not c.client_count][:count]
            if not chans:
                raise OSError(errno.EBUSY, "every DMA channel is claimed")
        for c in chans:
            c.client_count += 1
        return chans

    def map_sgtables(self, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
                     nr_chan: int = 1) -> bool:
        """``setup_sg_tables()`` of a v6 batch: each of the ``nr_chan`` channels'
        slices (``slice_bounds``) mapped with ``dma_map_sgtable()``, one entry
        per folio on each side (``_sgmap.sg_nents_slices``: the source's ``order``,
        the destination folios' own orders); False when a slice's
        ``src->nents != dst->nents``, counted in ``sg_mismatches``.  The
        kernel's mapping merges by entry length, so that takes
        ``fail_iommu_merge``.  ``sg_entries`` / ``sg_segments`` count the
        folios mapped and the source side's ``nents``."""
        model = self.model
        bounds = slice_bounds_array(int(order.size), nr_chan)
        nents, even = sg_nents_slices(order, self.memory.folio_order[dst], bounds,
                                      model.max_seg_bytes, model.iommu)
        self.sg_segments += nents
        even = even and not self.faults["fail_iommu_merge"].should_fail()
        self.sg_entries += int(order.size)
        self.sg_mismatches += not even
        return even

    def release_channels(self, chans: list[DmaChannel]) -> None:
        """``dma_release_channel()``."""
        for c in chans:
            c.client_count -= 1

    def copy(self, src: np.ndarray, dst: np.ndarray, order: np.ndarray, moved: np.ndarray,
             clean: bool) -> None:
        """Move ``moved[i]`` bytes of folio ``src[i]`` to ``dst[i]`` (whole
        folios when ``clean``); GIL-free, so it may run on a channel's thread."""
        mem = self.memory
        if clean:
            copy_folios(mem.arena_base, mem.page_bytes, dst, src, order)
        else:  # faults: short or failed descriptors
            copy_folio_prefixes(mem.arena_base, mem.page_bytes, dst, src, moved)


def slice_bounds(nr_folios: int, nr_chan: int) -> list[tuple[int, int]]:
    """The RFC's contiguous split: channel ``i`` gets ``[nr*i/c, nr*(i+1)/c)``."""
    return [(nr_folios * i // nr_chan, nr_folios * (i + 1) // nr_chan) for i in range(nr_chan)]


@functools.lru_cache(maxsize=256)
def slice_bounds_array(nr_folios: int, nr_chan: int) -> np.ndarray:
    """:func:`slice_bounds` as a read-only ``(nr_chan, 2)`` array, kept: a batch
    of the virtual clock's closed form wants it twice (mapping, schedule) and
    building it cost ~5 us each time; batches repeat a few sizes."""
    out = np.array(slice_bounds(nr_folios, nr_chan), dtype=np.int64).reshape(nr_chan, 2)
    out.flags.writeable = False
    return out


