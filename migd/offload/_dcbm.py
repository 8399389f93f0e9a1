"""``dcbm``: DMA batch copy over the dmaengine (the RFC's drivers/migrate_offload/dcbm).

Per batch: ``min(nr_dma_chan, nr_folios, 16)`` channels, contiguous slices of
the folio list per channel (``nr*i/c .. nr*(i+1)/c``), one descriptor per folio
(one segment each), each channel issued as soon as its descriptors are
submitted.  A descriptor's completion marks its folio FOLIO_CONTENT_COPIED, so
completions may come in any order.  The batch waits up to ``timeout``
(10 s) for them all: -ETIMEDOUT after that, -EIO if any descriptor failed or
came back short; either way every channel is terminated (synchronously, so no
late write can land after the CPU fallback) and only the unmarked folios are
left to the CPU.  ``folios_migrated`` / ``folios_failures`` count folios.
"""

from __future__ import annotations

import errno

import trio

from ..dma import Descriptor, DmaDevice, dcbm_nr_channels, slice_bounds
from ..mm import FOLIO_CONTENT_COPIED
from ._migrator import CopyBatch, Migrator

DCBM_MAX_CHANNELS = 16


class DcbmMigrator(Migrator):
    name = "dcbm"

    def __init__(self, device: DmaDevice, nr_dma_chan: int = 1, timeout: float = 10.0) -> None:
        self.device = device
        self.nr_dma_chan = 1
        self.set_nr_dma_chan(nr_dma_chan)
        self.timeout = timeout
        #: Pages per batch this migrator asks the core for (0: the core's bound).
        self.batch_size = 0
        #: Batches smaller than this many pages are declined (-EOPNOTSUPP).
        self.min_batch_pages = 0
        self.folios_migrated = 0
        self.folios_failures = 0
        self.completion_order: list[int] = []  # cookies of the last batch, as completed

    def set_nr_dma_chan(self, n: int) -> None:
        if not 1 <= n <= DCBM_MAX_CHANNELS:
            raise OSError(errno.EINVAL, f"nr_dma_chan must be 1..{DCBM_MAX_CHANNELS}")
        self.nr_dma_chan = n

    def batch_pages(self, nr_max_batched_migration: int) -> int:
        return self.batch_size or nr_max_batched_migration

    @property
    def param(self) -> int:
        return self.nr_dma_chan

    async def migrate_offc(self, batch: CopyBatch) -> int:
        nr = batch.nr_folios
        if batch.nr_pages < self.min_batch_pages:
            return -errno.EOPNOTSUPP  # too small to be worth the DMA setup
        dev = self.device
        try:
            chans = dev.request_channels(dcbm_nr_channels(self.nr_dma_chan, nr))
        except OSError as e:
            dev.batches_refused += 1
            self.folios_failures += nr
            return -e.errno
        flags = batch.memory.flags
        src = batch.src
        outstanding = nr
        all_done = trio.Event()
        failed = 0
        order: list[int] = []

        def complete(d: Descriptor) -> None:
            nonlocal outstanding, failed
            order.append(d.cookie)
            if d.status == 0 and d.residue == 0:
                flags[src[d.cookie]] |= FOLIO_CONTENT_COPIED
            else:
                failed += 1
            outstanding -= 1
            if outstanding == 0:
                all_done.set()

        rc = 0
        try:
            orders = batch.orders.tolist()
            dst = batch.dst.tolist()
            srcs = src.tolist()
            submit = batch.profile.dma.submit_us * 1e-6
            for ch, (lo, hi) in zip(chans, slice_bounds(nr, len(chans)), strict=True):
                descs = [Descriptor(srcs[i], dst[i], orders[i], complete, i)
                         for i in range(lo, hi)]
                await batch.clock.spend(submit * (hi - lo))  # prep + submit on the CPU
                await ch.submit(descs)
            with trio.move_on_after(self.timeout):
                await all_done.wait()
            if outstanding:
                rc = -errno.ETIMEDOUT
            elif failed:
                rc = -errno.EIO
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
        finally:
            dev.release_channels(chans)
            self.completion_order = order
            copied = nr - outstanding - failed
            self.folios_migrated += copied
            self.folios_failures += nr - copied
        return rc
