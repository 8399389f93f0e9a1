"""dcbm's batch copy from the engine's compiled fast path (real clock, ``native``).

On the real clock the general path hands each batch to the channels' trio
tasks, which hand their queues to the channels' copy threads: for a batch of
one 2 MiB folio that was ~370 us of Python and two thread hand-offs around
a ~180 us copy (dcbm:1 at 0.37x of the vanilla path).  When nothing else can
be on the channels — the ``native`` profile (no modelled latency, shared
channels, no ring), no fault armed, no descriptor queued or in flight — the
engine's compiled fast path posts each clean batch's slices straight to the
channels' copy threads and waits for them (``_kernels.folios_copy_dma``),
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

import numba
import numpy as np

from ..dma import DmaChannel, slice_bounds
from ..dma._chanctl import T_DONE, dma_chan_post, dma_chan_wait, new_ctl
from ..mm._copy import folios_set_content_copied
from ..mm._page import PAGE_SIZE
from ..mm._raw import ktime_get_ns

#: Columns of the per-channel counts (``chan_stats``): descriptors, bytes, busy ns,
#: and the completion time of the channel's slice of the last batch.
CH_DESCS, CH_BYTES, CH_BUSY_NS, CH_LAST_DONE, NR_CH_COLUMNS = range(5)


@numba.njit(cache=True, nogil=True)
def folios_copy_dma(base, page_bytes, mem_map, dst, folios, lo, hi, chan_ctl, chan_stats,
                    timeout_ns, nr_cpus, cpuclock):
    """RFC v6 dcbm's ``folios_copy_dma()`` for a clean batch, from compiled code:
    ``min(channels, nr_folios)`` contiguous slices (``nr*i/c``), each posted to
    its channel's copy thread and issued at once, then waited for channel by
    channel (``wait_for_completion_timeout()``); only when every channel
    finished is every folio marked FOLIO_CONTENT_COPIED.  The caller never
    copies: it spins while a CPU is free for it beside the channels' threads
    (``nch < nr_cpus``) and the thread is seen copying, else sleeps
    (``_chanctl.dma_chan_wait``).
    Each wait has its own ``timeout_ns``, as each channel's
    ``wait_for_completion_timeout()`` has.  Returns how many channels the
    batch claimed, negated when one timed out (then none is marked: the move
    loop copies them all)."""
    nr = hi - lo
    nch = min(chan_ctl.shape[0], nr)
    dstp = dst.ctypes.data
    srcp = folios.ctypes.data
    mmp = mem_map.ctypes.data
    cookies = np.empty(nch, dtype=np.int64)
    t_post = np.empty(nch, dtype=np.int64)
    for c in range(nch):
        a = lo + nr * c // nch
        b = lo + nr * (c + 1) // nch
        t_post[c] = ktime_get_ns()
        cookies[c] = dma_chan_post(chan_ctl[c].ctypes.data, base, page_bytes, dstp, srcp, mmp,
                                a, b, cpuclock)
    spin = nch < nr_cpus
    ok = True
    for c in range(nch):
        ctl = chan_ctl[c].ctypes.data
        # after a timeout the others are terminated (timeout 0): cancelled if
        # not started, else waited for, as dmaengine_terminate_sync() does
        if not dma_chan_wait(ctl, cookies[c], timeout_ns if ok else 0, spin and ok):
            ok = False
            continue  # never started: nothing to book
        a = lo + nr * c // nch
        b = lo + nr * (c + 1) // nch
        nbytes = 0
        for u in range(a, b):
            nbytes += PAGE_SIZE << mem_map[folios[u]].order
        done = chan_ctl[c, T_DONE]
        st = chan_stats[c]
        st[CH_DESCS] += b - a
        st[CH_BYTES] += nbytes
        st[CH_BUSY_NS] += done - t_post[c]
        st[CH_LAST_DONE] = done
    if not ok:
        return -nch
    folios_set_content_copied(mem_map, folios[lo:hi])
    return nch


@dataclass
class CompiledCopy:
    """What the fast path needs to run a migrator's batch copy compiled:
    :meth:`claim` before the compiled call, :meth:`book_and_release` after it."""

    ctl: np.ndarray  # the channels' control rows (``_chanctl``)
    stats: np.ndarray  # per channel: the ``CH_*`` columns
    timeout_ns: int
    migrator: object
    #: CPUs this process may run on (affinity, not the machine's count): the
    #: caller spins on a wait only when one is free beside the channels' threads.
    nr_cpus: int
    #: The caller's CPU-time clock: the channel threads spin for its next
    #: batch only while it is on a CPU (0: none; a clock that stands still).
    cpuclock: int
    chans: list[DmaChannel] = field(default_factory=list)  # claimed

    def claim(self) -> None:
        """``dma_request_chan_by_mask()`` of the channels whose rows are ``ctl``."""
        self.chans = self.migrator.device.request_channels(self.ctl.shape[0])

    def book_and_release(self, nr_folios: np.ndarray, nr_chan: np.ndarray,
                         nr_failed: np.ndarray) -> None:
        """Book the batches the fast path ran (per batch: folios, channels
        claimed, folios a timed-out copy left to the CPU); release the channels."""
        mig = self.migrator
        mig.device.release_channels(self.chans)
        st = self.stats
        for c, ch in enumerate(self.chans):
            ch.account(int(st[c, CH_DESCS]), int(st[c, CH_BYTES]), int(st[c, CH_BUSY_NS]) * 1e-9)
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


#: The DMA arguments of a fast-path call whose batch copy is not on DMA channels.
NO_COMPILED_COPY = CompiledCopy(new_ctl(0), np.zeros((0, NR_CH_COLUMNS), dtype=np.int64), 0,
                                None, 0, 0)


def compiled_copy(migrator) -> CompiledCopy | None:
    """A :class:`CompiledCopy` for ``migrator``'s next batches when they may
    run in the compiled fast path (channels idle, their copy threads started),
    else None; the channels are claimed when the call runs."""
    dev = migrator.device
    model = dev.model
    if not model.native or model.exclusive or model.ring_size or migrator.min_batch_pages:
        return None
    n = min(migrator.nr_dma_chan, len(dev.channels))
    if not all(c.prepare_compiled_posts() for c in dev.channels[:n]):
        return None
    return CompiledCopy(dev.ctl[:n], np.zeros((n, NR_CH_COLUMNS), dtype=np.int64),
                        int(migrator.timeout * 1e9), migrator, len(os.sched_getaffinity(0)),
                        time.pthread_getcpuclockid(threading.get_ident()))
