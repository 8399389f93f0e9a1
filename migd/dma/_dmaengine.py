"""An emulated dmaengine (drivers/dma/dmaengine.c and a memcpy-capable driver).

A :class:`DmaDevice` has channels; each :class:`DmaChannel` is a trio task that
consumes the descriptors submitted to it, in order, and completes each one by
calling its callback (``dmaengine_result``: status and residue).  Channels run
independently, so completions across channels arrive in any order.

Real clock: the channel copies the bytes itself, off the event loop — all the
descriptors it has queued in one worker-thread call of the GIL-free compiled
copy — and, unless the profile is ``native``, holds each descriptor until its
modelled completion time.  Virtual clock: the channel sleeps the modelled time
and moves the one-word pages inline; no thread is ever waited on.

Faults (``fail_dma_*``) act here, where hardware fails: a descriptor that
completes with an error, one that completes short (residue), one that never
completes (the client's wait times out and it terminates the channel).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from ..faults import FaultInjector
from ..hw import Clock, DmaModel
from ..mm import PAGE_SIZE, PhysMemory


@dataclass
class Descriptor:
    """One memcpy descriptor: a whole folio (one segment)."""

    src: int  # pfn
    dst: int  # pfn
    order: int
    callback: Callable[[Descriptor], None]
    cookie: int = 0  # position in the client's list
    status: int | None = None  # 0, or -errno; None until completed
    residue: int = 0  # bytes not transferred

    @property
    def nbytes(self) -> int:
        return PAGE_SIZE << self.order


@dataclass
class ChannelStatistics:
    memcpy_count: int
    bytes_transferred: int
    in_use: bool
    busy_seconds: float
    #: ``chan->client_count``, what the kernel's ``class/dma/*/in_use`` prints.
    client_count: int = 0


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
        self._queue: deque[Descriptor] = deque()
        self._wakeup = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._generation = 0  # bumped by terminate: drops what was queued before
        self._ring_space = trio.Event()

    @property
    def in_use(self) -> bool:
        return self.client_count > 0

    @property
    def busy(self) -> bool:
        return bool(self._queue) or not self._idle.is_set()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(self.memcpy_count, self.bytes_transferred, self.in_use,
                                 self.busy_seconds, self.client_count)

    async def submit(self, descs: list[Descriptor]) -> None:
        """``dmaengine_submit()`` + ``dma_async_issue_pending()``.

        With a descriptor ring (``ring_size``), waits for room as the channel
        completes earlier descriptors, as a full ring makes a driver wait.
        """
        ring = self.device.model.ring_size
        while descs:
            if ring:
                while len(self._queue) >= ring:
                    self._ring_space = trio.Event()
                    await self._ring_space.wait()
                take = ring - len(self._queue)
            else:
                take = len(descs)
            self._queue.extend(descs[:take])
            descs = descs[take:]
            self._wakeup.set()

    async def terminate_sync(self) -> None:
        """``dmaengine_terminate_sync()``: drop queued descriptors (no callback)
        and wait until nothing of this channel is in flight."""
        self._generation += 1
        self._queue.clear()
        self._ring_space.set()
        self._wakeup.set()
        await self._idle.wait()

    async def run(self) -> None:
        """The channel's worker loop."""
        while True:
            if not self._queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            self._idle = trio.Event()
            try:
                await self._process(list(self._queue), self._generation)
            finally:
                self._idle.set()

    #: At most this many descriptors complete together (and run at one rate
    #: before the engine/bus sharing is re-evaluated); never more than an
    #: eighth of what is queued, so small batches complete descriptor by
    #: descriptor and large ones stay cheap to simulate.
    RATE_CHUNK = 64

    async def _process(self, descs: list[Descriptor], generation: int) -> None:
        """Run what is queued: faults decided, bytes moved, modelled times held."""
        dev = self.device
        model = dev.model
        faults = dev.faults
        n = len(descs)
        hang = faults["fail_dma_timeout"].should_fail_many(n)
        error = faults["fail_dma_desc"].should_fail_many(n)
        short = faults["fail_dma_partial"].should_fail_many(n)
        if hang.any():  # that descriptor never completes: stop before it
            n = int(np.flatnonzero(hang)[0])
        nbytes = np.array([d.nbytes for d in descs[:n]], dtype=np.int64)
        moved = np.where(error[:n], 0, np.where(short[:n], nbytes // 2, nbytes))
        start = trio.current_time()
        if not dev.clock.virtual and n:  # real bytes, off the event loop
            await trio.to_thread.run_sync(dev.copy, descs[:n], moved)
        t = start
        chunk = max(1, min(self.RATE_CHUNK, n // 8))
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            if dev.clock.virtual or not model.native:
                sharing = sum(1 for c in dev.channels if c.engine == self.engine and c.busy)
                active = sum(1 for c in dev.channels if c.busy)
                t += sum(model.desc_seconds(int(nbytes[i]), descs[i].order, sharing, active)
                         for i in range(lo, hi))
                await trio.sleep_until(t)
            else:
                await trio.lowlevel.checkpoint()  # let other channels complete too
            if generation != self._generation:
                return  # terminated meanwhile: dropped without callback
            if dev.clock.virtual:
                dev.copy(descs[lo:hi], moved[lo:hi])
            for i in range(lo, hi):
                d = self._queue.popleft()
                d.status = -errno.EIO if error[i] else 0
                d.residue = int(nbytes[i] - moved[i])
                self.memcpy_count += 1
                self.bytes_transferred += int(moved[i])
                d.callback(d)
            self._ring_space.set()
        self.busy_seconds += trio.current_time() - start
        while n < len(descs) and generation == self._generation:
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
        self.channels = [DmaChannel(self, i) for i in range(model.nr_channels)]
        self.batches_refused = 0

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
        is refused, as RFC v6 dcbm's ``dcbm_claim_channels()`` refuses it).
        Shared channels (``native``, SDXI) are always granted.
        """
        if self.faults["fail_dma_busy"].should_fail():
            raise OSError(errno.EBUSY, "no DMA channel available (injected)")
        if not self.model.exclusive:
            chans = self.channels[:count]
        else:
            chans = [c for c in self.channels if not c.client_count][:count]
            if not chans:
                raise OSError(errno.EBUSY, "every DMA channel is claimed")
        for c in chans:
            c.client_count += 1
        return chans

    def release_channels(self, chans: list[DmaChannel]) -> None:
        """``dma_release_channel()``."""
        for c in chans:
            c.client_count -= 1

    def copy(self, descs: list[Descriptor], nbytes: np.ndarray) -> None:
        """Move the bytes of ``descs`` (``nbytes[i]`` of each; may run in a thread)."""
        mem = self.memory
        src = np.array([d.src for d in descs], dtype=np.int64)
        dst = np.array([d.dst for d in descs], dtype=np.int64)
        full = nbytes == np.array([d.nbytes for d in descs], dtype=np.int64)
        if full.all():
            mem.copy_folios(dst, src, np.array([d.order for d in descs], dtype=np.int8))
            return
        for i, d in enumerate(descs):  # faults: short or failed descriptors
            if nbytes[i]:
                words = int(nbytes[i]) * mem.words_per_page // PAGE_SIZE
                flat = mem.arena.reshape(-1)
                s, t = d.src * mem.words_per_page, d.dst * mem.words_per_page
                flat[t:t + max(words, 1)] = flat[s:s + max(words, 1)]


def slice_bounds(nr_folios: int, nr_chan: int) -> list[tuple[int, int]]:
    """The RFC's contiguous split: channel ``i`` gets ``[nr*i/c, nr*(i+1)/c)``."""
    return [(nr_folios * i // nr_chan, nr_folios * (i + 1) // nr_chan) for i in range(nr_chan)]


def dcbm_nr_channels(nr_dma_chan: int, nr_folios: int) -> int:
    """``min(nr_dma_chan, nr_folios, 16)``: how many channels a batch uses."""
    return min(nr_dma_chan, nr_folios, 16)


