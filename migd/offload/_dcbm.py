"""``dcbm``: DMA batch copy over the dmaengine, as RFC v6's
drivers/migrate_offload/dcbm/dcbm.c (``folios_copy_dma()``) does it.

Per batch:

1. claim ``min(nr_dma_chan, nr_folios, 16)`` channels (:func:`dcbm_nr_channels`),
   each held exclusively on exclusive hardware (PTDMA, DSA) until the batch
   releases them (``dcbm_release_channels()``); fewer while another batch
   holds some, and none -> the batch is refused (-EBUSY, ``batches_refused``,
   not a failure: the move loop copies it);
2. map the folios (``dma_map_sgtable()``) and prepare one descriptor per folio,
   contiguous slices ``nr*i/c .. nr*(i+1)/c`` per channel, each channel issued
   as soon as its slice is submitted; these are CPU work of the caller;
3. wait for each channel in turn, up to ``timeout`` (10 s) each: -ETIMEDOUT,
   or -EIO once a channel completed with a failed or short descriptor; on
   either every channel is terminated (synchronously: no late write after the
   CPU fallback);
4. only when every channel completed cleanly is FOLIO_CONTENT_COPIED set, on
   every folio of the batch (``folios_migrated += nr_folios``); otherwise none
   is marked, ``folios_failures += nr_folios`` and the CPU copies the whole
   batch in the move loop.

The later ring-chunked variant marks each ring's worth of descriptors as it
completes, so an error keeps the finished chunks; it belongs to the ``sdxi``
profile only (``DmaModel.mark_chunks``).

``variant = "newest"`` runs the series' newest iteration instead
(``_dcbm_newest``: channels acquired at enable, per-device groups, trylock
claims, throttled and scatter-gather submission, no terminate, and the
clearing offload of ``_dcbm_clear``).  v6 stays selectable and is what bench
runs by default: with PTDMA's one channel per device the newest grouping gives
a batch one channel, while the published 16-channel rows (65 GB/s against
12.65 GB/s) were measured with channels taken across devices.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import numpy as np
import trio

from ..dma import DmaChannel, DmaDevice, slice_bounds
from ..mm import FOLIO_CONTENT_COPIED, NR_MAX_BATCHED_MIGRATION_LIMIT
from . import _dcbm_clear, _dcbm_newest
from ._dcbm_fast import DcbmCompiledCopy, compiled_copy
from ._dcbm_newest import (
    DCBM_MAX_INFLIGHT_DEFAULT,
    DCBM_SG_ELEMS_DEFAULT,
    MIN_CLEAR_BYTES_DEFAULT,
    VARIANTS,
    NewestChannels,
)
from ._dcbm_vclock import copy_closed_form, fits
from ._migrator import CopyBatch, Migrator

DCBM_MAX_CHANNELS = 16


def dcbm_nr_channels(nr_dma_chan: int, nr_folios: int) -> int:
    """``min(nr_dma_chan, nr_folios, 16)``: how many channels a batch uses."""
    return min(nr_dma_chan, nr_folios, DCBM_MAX_CHANNELS)


@dataclass
class _Chunk:
    """Descriptors whose folios are marked together when all completed cleanly."""

    lo: int
    hi: int
    outstanding: int
    failed: bool = False


@dataclass
class _Work:
    """``struct dma_work``: one channel's slice and its completion."""

    chan: DmaChannel
    outstanding: int
    done: trio.Event = field(default_factory=trio.Event)
    failed: bool = False


def _pages(n: int, what: str) -> int:
    if not 0 <= n <= NR_MAX_BATCHED_MIGRATION_LIMIT:
        raise OSError(errno.EINVAL, f"{what} must be 0..{NR_MAX_BATCHED_MIGRATION_LIMIT}")
    return n


class DcbmMigrator(Migrator):
    name = "dcbm"

    def __init__(self, device: DmaDevice, nr_dma_chan: int = 1, timeout: float = 10.0,
                 variant: str = "v6") -> None:
        self.device = device
        self.nr_dma_chan = 1
        #: ``v6`` or ``newest`` (``_dcbm_newest``); set while not offloading.
        self.variant = "v6"
        self.set_variant(variant)
        #: The newest iteration's channel table (acquired while offloading).
        self.channels = NewestChannels(device)
        self.offloading = False
        # The newest iteration's module parameters, with the driver's defaults.
        self.min_clear_bytes = MIN_CLEAR_BYTES_DEFAULT
        self.cpu_warm = True
        self.util_gate = True
        self.cache_ctrl = True
        self.max_inflight = DCBM_MAX_INFLIGHT_DEFAULT
        self.sg_elems = DCBM_SG_ELEMS_DEFAULT
        self.folios_cleared = 0
        self.clear_failures = 0
        self.folios_gated = 0
        #: Bytes written with DMA_PREP_CACHE_CONTROL (cache-allocating writes):
        #: the LLC footprint ``cache_ctrl`` costs other data.
        self.cache_footprint_bytes = 0
        #: ``mm_offload_cpus_saturated()`` (bench clear sets its own).
        self.cpus_saturated = _dcbm_clear.cpus_saturated
        self.set_nr_dma_chan(nr_dma_chan)
        self.timeout = timeout
        #: Pages per batch this migrator asks the core for (0: the core's bound).
        self.batch_size = 0
        #: Batches smaller than this many pages are declined (-EOPNOTSUPP).
        self.min_batch_pages = 0
        self.folios_migrated = 0
        self.folios_failures = 0
        self._order: list[np.ndarray] = []  # completed cookie ranges of the last batch
        #: The closed form's completion times, sorted into ``_order`` when read.
        self._order_times: np.ndarray | None = None
        #: Channels each batch got, most recent last (bounded): contention shows here.
        self.channels_claimed: list[int] = []
        #: Batches copied in closed form on the virtual clock (``_dcbm_vclock``).
        self.closed_form_batches = 0

    @property
    def completion_order(self) -> list[int]:
        """Cookies (positions in the batch) of the last batch, as completed."""
        if self._order_times is not None:
            self._order = [np.argsort(self._order_times, kind="stable")]
            self._order_times = None
        return np.concatenate(self._order).tolist() if self._order else []

    @completion_order.setter
    def completion_order(self, cookies) -> None:
        """A copy that completed at once (the real clock's compiled posts, the
        newest iteration) books the whole order."""
        self._order = [np.asarray(cookies, dtype=np.int64)]
        self._order_times = None

    def completed_at(self, t_done: np.ndarray) -> None:
        """The closed-form copy (``_dcbm_vclock``): each descriptor's completion
        time; the order (a stable sort, ties in cookie order) is taken when
        read - a 512-folio sort per batch was 4% of its simulation."""
        self._order_times = t_done

    def note_claims(self, counts: list[int]) -> None:
        """Channels each batch got, most recent last (the last 64)."""
        self.channels_claimed.extend(counts)
        del self.channels_claimed[:-64]

    def set_nr_dma_chan(self, n: int) -> None:
        """``nr_dma_chan_param_set()``: 1..16; the newest acquires that many at
        enable, so a write while offloading is -EBUSY there."""
        if not 1 <= n <= DCBM_MAX_CHANNELS:
            raise OSError(errno.EINVAL, f"nr_dma_chan must be 1..{DCBM_MAX_CHANNELS}")
        if self.variant == "newest" and getattr(self, "offloading", False):
            raise OSError(errno.EBUSY, "nr_dma_chan: offloading is enabled")
        self.nr_dma_chan = n

    def set_variant(self, variant: str) -> None:
        if variant not in VARIANTS:
            raise OSError(errno.EINVAL, f"variant must be one of {', '.join(VARIANTS)}")
        if getattr(self, "offloading", False) and variant != self.variant:
            raise OSError(errno.EBUSY, "variant: offloading is enabled")
        self.variant = variant

    def set_max_inflight(self, n: int) -> None:
        self.max_inflight = n

    def set_sg_elems(self, n: int) -> None:
        self.sg_elems = n

    @property
    def clears(self) -> bool:
        """The newest provider has ``clear_folio``; v6 has no clearing."""
        return self.variant == "newest"

    def enable(self) -> None:
        """``offloading_param_set(1)``: the newest acquires its channels
        (``dcbm_get_channels()``; ENODEV when none) before registering."""
        if self.variant == "newest":
            self.channels.get(self.nr_dma_chan)
        self.offloading = True

    def disable(self) -> None:
        """``offloading_param_set(0)``: after unregister, ``dcbm_put_channels()``."""
        if self.variant == "newest":
            self.channels.put()
        self.offloading = False

    async def clear_folio(self, memory, clock, profile, pfn: int, order: int,
                          hint: int | None) -> int:
        if not self.clears or not self.offloading:
            return -errno.ENXIO
        return await _dcbm_clear.folio_clear_dma(self, memory, clock, profile, pfn, order,
                                                 hint)

    def set_batch_size(self, pages: int) -> None:
        self.batch_size = _pages(pages, "batch_size")

    def set_min_batch_pages(self, pages: int) -> None:
        self.min_batch_pages = _pages(pages, "min_batch_pages")

    def batch_pages(self, nr_max_batched_migration: int) -> int:
        return self.batch_size or nr_max_batched_migration

    @property
    def param(self) -> int:
        return self.nr_dma_chan

    def compiled_copy(self) -> DcbmCompiledCopy | None:
        """Idle ``native`` channels: the fast path posts to them (``_dcbm_fast``).
        Not for a subclass with its own ``migrate_offc()`` (a test's planted
        bug): the compiled copy is this class's copy, not that one."""
        if type(self).migrate_offc is not DcbmMigrator.migrate_offc or self.variant != "v6":
            return None
        return compiled_copy(self)

    async def migrate_offc(self, batch: CopyBatch) -> int:
        nr = batch.nr_folios
        if batch.nr_pages < self.min_batch_pages:
            return -errno.EOPNOTSUPP  # too small to be worth the DMA setup
        if self.variant == "newest":
            return await _dcbm_newest.copy_folios(self, batch)
        dev = self.device
        try:
            chans = dev.request_channels(dcbm_nr_channels(self.nr_dma_chan, nr))
        except OSError as e:
            dev.batches_refused += 1
            return -e.errno
        self.note_claims([len(chans)])
        try:
            # setup_sg_tables(), after the channels are requested
            if not dev.map_sgtables(batch.src, batch.dst, batch.orders, len(chans)):
                return -errno.EINVAL  # src.nents != dst.nents: the CPU copies the batch
            return await self._copy(batch, chans)
        finally:
            dev.release_channels(chans)
            marked = int(np.count_nonzero(batch.memory.flags[batch.src] & FOLIO_CONTENT_COPIED))
            self.folios_migrated += marked
            self.folios_failures += nr - marked

    async def _copy(self, batch: CopyBatch, chans: list[DmaChannel]) -> int:
        """Map, submit, wait; returns 0 or -errno."""
        nr = batch.nr_folios
        if batch.closed_form and fits(self.device, chans, nr):  # virtual clock, alone
            rc = await copy_closed_form(self, batch, chans)
            if rc is not None:
                return rc
        model = self.device.model
        clock = batch.clock
        flags = batch.memory.flags
        src = batch.src
        # dma_request_chan_by_mask() + dma_release_channel() per channel, and
        # dma_map_sgtable() of every folio: CPU work before the first descriptor.
        await clock.spend((model.chan_request_us * len(chans) + model.map_folio_us * nr) * 1e-6)
        chunk_len = model.ring_size if model.mark_chunks and model.ring_size else nr
        chunks = [_Chunk(lo, min(lo + chunk_len, nr), min(lo + chunk_len, nr) - lo)
                  for lo in range(0, nr, chunk_len)]
        bounds = slice_bounds(nr, len(chans))
        works = [_Work(ch, hi - lo) for ch, (lo, hi) in zip(chans, bounds, strict=True)]
        order: list[np.ndarray] = []
        self._order = order
        self._order_times = None

        def completer(work: _Work):
            def complete(cookie: np.ndarray, status: np.ndarray, residue: np.ndarray) -> None:
                """One completed range of ``work``'s slice (contiguous cookies)."""
                order.append(cookie.copy())
                ok = not (status.any() or residue.any())
                work.failed |= not ok
                first, last = int(cookie[0]), int(cookie[-1])
                for chunk in chunks[first // chunk_len:last // chunk_len + 1]:
                    if not ok:  # a chunk fails with any of its descriptors
                        bad = np.flatnonzero((status != 0) | (residue != 0)) + first
                        chunk.failed |= bool(((bad >= chunk.lo) & (bad < chunk.hi)).any())
                    chunk.outstanding -= min(last + 1, chunk.hi) - max(first, chunk.lo)
                    if chunk.outstanding == 0 and not chunk.failed:
                        flags[src[chunk.lo:chunk.hi]] |= FOLIO_CONTENT_COPIED
                work.outstanding -= cookie.size
                if work.outstanding == 0:
                    work.done.set()
            return complete

        rc = 0
        try:
            cookies = np.arange(nr, dtype=np.int64)
            submit = model.submit_us * 1e-6
            # A submission waits while the channel's ring is full; a descriptor
            # that never completes would keep it full: bounded as the waits below.
            with trio.move_on_after(self.timeout) as submitting:
                for work, (lo, hi) in zip(works, bounds, strict=True):
                    await clock.spend(submit * (hi - lo))  # prep + submit on the CPU
                    await work.chan.submit(src[lo:hi], batch.dst[lo:hi], batch.orders[lo:hi],
                                           cookies[lo:hi], completer(work))  # + issue_pending
            if submitting.cancelled_caught:
                rc = -errno.ETIMEDOUT
            for work in works if not rc else ():  # wait_for_completion_timeout(), by channel
                with trio.move_on_after(self.timeout):
                    await work.done.wait()
                if not work.done.is_set():
                    rc = -errno.ETIMEDOUT
                    break
                if work.failed:
                    rc = -errno.EIO
                    break
            if rc:
                for ch in chans:
                    await ch.terminate_sync()
        except trio.Cancelled:
            # The engine is stopping: no DMA write may land after the CPU
            # fallback copies, so the channels are terminated first.
            with trio.CancelScope(shield=True):
                for ch in chans:
                    await ch.terminate_sync()
            raise
        return rc
