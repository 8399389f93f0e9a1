"""A published cell, predicted in closed form from a profile's parameters.

The bench rig runs a cell through the emulator (``migd bench seed``); the fit
needs the same number thousands of times, so :func:`predict` computes it
directly from the model's own cost functions — ``CpuModel.unmap_seconds``,
``move_seconds``, ``copy_seconds``, ``flush_us``, ``mt_copy_seconds`` and
the channels' schedule ``hw.dma_schedule`` — in the order the engine charges
them on the virtual clock: per ``move_pages()`` call ``call_us``, then per
batch the unmap loop, the TLB flush, the batch copy and the move loop, and
the call's end (``call_end_seconds`` of its bytes).  A
cell's batches are identical (1 GiB of one folio size), so one batch of each
size is computed and multiplied.  Rejected: running the emulator per
evaluation (~0.1-0.5 s a cell, the fit would take hours); the fitted profile
is checked against the emulator by ``migd bench seed`` all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..hw import HardwareProfile, chunk_share
from ..mm import HPAGE_PMD_ORDER, PAGE_SIZE

#: One 1 GiB run, as the published benchmark moves.
TOTAL_BYTES = 1 << 30
#: The channels' rate chunk (``DmaChannel.RATE_CHUNK``), as the schedule uses it.
RATE_CHUNK = 64
DCBM_MAX_CHANNELS = 16


@dataclass(frozen=True)
class Cell:
    """One measurement: ``migrator`` none|dcbm|mtcopy with ``param`` channels or
    threads, folio ``order``, batch bound ``batch_pages``, ``n_folios`` per
    move_pages() call (0: the whole 1 GiB in one call), the measured
    throughput and first-folio latency (None: not measured), and where it
    was read (``table``, ``line``)."""

    table: str
    line: int
    migrator: str
    param: int
    order: int
    batch_pages: int
    n_folios: int
    gbps: float | None
    first_folio_us: float | None

    @property
    def label(self) -> str:
        n = f" n={self.n_folios}" if self.n_folios else ""
        m = f"{self.migrator}:{self.param}" if self.migrator != "none" else "none"
        return f"{m} {PAGE_SIZE << self.order >> 10}K B={self.batch_pages}{n}"


def _batch_seconds(profile: HardwareProfile, cell: Cell, nr: int) -> tuple[float, float]:
    """One batch of ``nr`` folios on warm caches: (its time, its first
    folio's remap time).  Every folio of a cell costs the same, so the CPU's
    per-folio costs are computed once and multiplied."""
    cpu, dma = profile.cpu, profile.dma
    one = np.array([cell.order], dtype=np.int64)
    t = float(cpu.unmap_seconds(one)[0]) * nr + cpu.flush_us * 1e-6
    move = float(cpu.move_seconds(one)[0])
    if cell.migrator == "none":
        move += float(cpu.copy_seconds(one)[0])
    if cell.migrator == "mtcopy":
        t += cpu.mt_copy_seconds(thread_bytes(cell.order, nr, cell.param))
    elif cell.migrator == "dcbm":
        k = min(cell.param, nr, DCBM_MAX_CHANNELS)
        lo = nr * np.arange(k) // k
        hi = nr * np.arange(1, k + 1) // k
        t += (dma.chan_request_us * k + dma.map_folio_us * nr) * 1e-6
        t_submit = t + np.cumsum((dma.submit_us * 1e-6) * (hi - lo))
        engines = np.arange(k, dtype=np.int64) // dma.channels_per_engine
        mapped = 0 if cell.order >= HPAGE_PMD_ORDER else 1 << cell.order
        t = _uniform_schedule(t_submit, engines, lo, hi, RATE_CHUNK,
                              float(dma.fixed_us(mapped)) * 1e-6,
                              float(dma.walked_pages(mapped)),
                              float(PAGE_SIZE << cell.order), float(dma.iommu_walk_us),
                              float(dma.chan_gbps), float(dma.engine_gbps),
                              float(dma.membus_gbps))
    return t + move * nr, t + move


@numba.njit(cache=True, nogil=True)
def _uniform_schedule(t_sub, engine, lo, hi, rate_chunk, fixed, mapped, nbytes, walk_us,
                      chan_gbps, engine_gbps, membus_gbps):
    """``hw.dma_schedule``'s event loop for a batch of identical descriptors:
    the same chunks, busy sets and shares, a chunk's time being its length
    times one descriptor's (the fit's speed: no per-descriptor loop).
    Returns when the last channel goes idle."""
    k = t_sub.size
    chunk = np.empty(k, dtype=np.int64)
    for c in range(k):
        chunk[c] = max(1, min(rate_chunk, (hi[c] - lo[c]) // 8))
    nxt = t_sub.copy()
    pos = lo.copy()
    cend = lo.copy()
    started = np.zeros(k, dtype=np.bool_)
    busy = np.zeros(k, dtype=np.bool_)
    done = np.zeros(k, dtype=np.bool_)
    t_end = 0.0
    while True:
        c = np.int64(-1)  # not a literal: chunk_share is compiled for one type
        best = np.inf
        for x in range(k):
            if not done[x] and nxt[x] < best:
                best = nxt[x]
                c = x
        if c < 0:
            return t_end
        t = nxt[c]
        if not started[c]:
            started[c] = True
            busy[c] = True
        else:
            pos[c] = cend[c]
            if pos[c] == hi[c]:
                busy[c] = False
                done[c] = True
                t_end = max(t_end, t)
                continue
        rate, wait = chunk_share(c, busy, engine, walk_us, chan_gbps, engine_gbps, membus_gbps)
        e = min(pos[c] + chunk[c], hi[c])
        cend[c] = e
        nxt[c] = t + (e - pos[c]) * (fixed + wait * mapped + nbytes / (rate * 1e9))


def thread_bytes(order: int, nr: int, threads: int) -> np.ndarray:
    """mtcopy's split (``offload._mtcopy.thread_bytes``) of ``nr`` folios of one order."""
    size = float(PAGE_SIZE << order)
    if nr < threads:
        return np.full(threads, nr * size / threads)
    q, r = divmod(nr, threads)
    return (q + (np.arange(threads) < r)) * size


def predict(profile: HardwareProfile, cell: Cell) -> tuple[float, float]:
    """``(gbps, first_folio_us)`` the emulator gives ``cell`` on ``profile``:
    throughput of the whole run and the median batch's first-folio latency.
    A cold folio (``CpuModel.cold_folio_us``, the first ``cold_folios`` of a
    call) adds its surcharge twice (unmap, move); a batch's first folio pays
    it in each of the batch's cold unmaps before it and in its own move."""
    cpu = profile.cpu
    per_folio = PAGE_SIZE << cell.order
    per_call = cell.n_folios or TOTAL_BYTES // per_folio
    per_batch = max(1, cell.batch_pages >> cell.order)
    full, rem = divmod(per_call, per_batch)
    sizes = [per_batch] * full + ([rem] if rem else [])
    warm = {n: _batch_seconds(profile, cell, n) for n in set(sizes)}
    extra = cpu.cold_folio_us * 1e-6
    seconds = (cpu.call_us * 1e-6 + sum(warm[n][0] for n in sizes)
               + cpu.call_end_seconds(per_call * per_folio))
    ffs = np.array([warm[n][1] for n in sizes])
    if extra:
        starts = np.arange(len(sizes)) * per_batch
        cold = np.clip(cpu.cold_folios - starts, 0, np.array(sizes))
        seconds += 2 * extra * float(cold.sum())
        ffs = ffs + extra * (cold + (cold > 0))
    return per_call * per_folio / seconds / 1e9, float(np.median(ffs)) * 1e6
