"""dcbm's batch copy from the engine's compiled fast path (real clock, ``native``).

On the real clock the general path hands each batch to the channels' trio
tasks, which hand their queues to the channels' copy threads: for a batch of
one 2 MiB folio that was ~370 us of Python and two thread hand-offs around
a ~180 us copy (dcbm:1 at 0.37x of the vanilla path).  When nothing else can
be on the channels — the ``native`` profile (no modelled latency, shared
channels, no ring), no fault armed, no descriptor queued or in flight — the
engine's compiled fast path posts each clean batch's slices straight to the
channels' copy threads and waits for them (``dma.folios_copy_dma``),
batch after batch, and this module books afterwards what the channels and
dcbm would have booked: claims, descriptors, bytes, busy time, folios
migrated, the last batch's completion order.

What stays the same: the copy runs on each channel's own thread, never the
caller's; ``min(nr_dma_chan, nr_folios, 16)`` channels per batch with the
RFC's contiguous slices; every folio marked only after every channel
finished; a wait that times out (``timeout``) marks none and the move loop
copies the batch (a fallback with cause ETIMEDOUT).  What differs: the
channels are claimed for the whole compiled call (up to 8 ms of batches)
rather than per batch, so a ``class/dma/*/in_use`` read meanwhile shows them
claimed between two batches too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..dma import (
    CH_BUSY_NS,
    CH_BYTES,
    CH_DESCS,
    CH_LAST_DONE,
    NR_CH_COLUMNS,
    DmaChannel,
    slice_bounds,
)
from ._migrator import CompiledCopy


@dataclass
class DcbmCompiledCopy(CompiledCopy):
    """dcbm's channels for the compiled fast path, and its books afterwards."""

    migrator: object = None
    chans: list[DmaChannel] = field(default_factory=list)  # claimed

    def claim(self) -> None:
        """``dma_request_chan_by_mask()`` of the channels whose rows are ``ctl``."""
        self.chans = self.migrator.device.request_channels(self.ctl.shape[0])

    def book_and_release(self, nr_folios: np.ndarray, nr_chan: np.ndarray,
                         nr_failed: np.ndarray, owners: np.ndarray | None = None,
                         weights: np.ndarray | None = None) -> None:
        """Book what the channels and dcbm would have booked; release the channels."""
        mig = self.migrator
        mig.device.release_channels(self.chans)
        st = self.stats
        for c, ch in enumerate(self.chans):
            ch.account(int(st[c, CH_DESCS]), int(st[c, CH_BYTES]), int(st[c, CH_BUSY_NS]) * 1e-9,
                       owners, weights)
        self.chans = []
        if not nr_folios.size:
            return
        failed = int(nr_failed.sum())
        mig.folios_migrated += int(nr_folios.sum()) - failed
        mig.folios_failures += failed
        mig.note_claims(nr_chan[-64:].tolist())
        nr, nch = int(nr_folios[-1]), int(nr_chan[-1])
        if not nr_failed[-1]:
            bounds = slice_bounds(nr, nch)
            first = np.argsort(st[:nch, CH_LAST_DONE], kind="stable")
            mig.completion_order = np.concatenate([np.arange(*bounds[c]) for c in first])


def compiled_copy(migrator) -> DcbmCompiledCopy | None:
    """A :class:`DcbmCompiledCopy` for ``migrator``'s next batches when they may
    run in the compiled fast path (channels idle, their copy threads started),
    else None; the channels are claimed when the call runs."""
    dev = migrator.device
    model = dev.model
    if not model.native or model.exclusive or model.ring_size or migrator.min_batch_pages:
        return None
    n = min(migrator.nr_dma_chan, len(dev.channels))
    if not all(c.prepare_compiled_posts() for c in dev.channels[:n]):
        return None
    return DcbmCompiledCopy(dev.ctl[:n], np.zeros((n, NR_CH_COLUMNS), dtype=np.int64),
                            int(migrator.timeout * 1e9), len(os.sched_getaffinity(0)),
                            time.pthread_getcpuclockid(threading.get_ident()), migrator)
