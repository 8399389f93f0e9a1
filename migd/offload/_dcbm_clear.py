"""The newest dcbm's clearing offload: ``folio_clear_dma()`` behind
``mm_offload_clear_folio()`` (mm/mm_offload.c), and the CPU clear it falls back to.

``folio_clear_dma()``: a folio smaller than ``min_clear_bytes`` is refused
(-ENODEV); with ``util_gate``, a machine whose every CPU is busy
(``mm_offload_cpus_saturated()``) is refused (-EBUSY, ``folios_gated``); else
``clamp(size / 2 MiB, 1, nr_channels)`` channels of one group are claimed as
a copy claims them (-EBUSY when none is free), an engine without DMA_MEMSET
is -EOPNOTSUPP, and the folio is zeroed by memset descriptors of at least
2 MiB spread round-robin over the claimed channels (``submit_clear_range()``),
leaving out the ``cpu_warm`` neighbourhood (2 pages either side of the
faulting page), which the CPU clears meanwhile.  Every descriptor runs out
before the result is known; any failure is ``clear_failures`` and the caller
clears on the CPU (:func:`clear_folio`).

The emulated fills do not go through the channels' descriptor rings (a ring
holds folio copies): their time is ``DmaModel.desc_seconds`` of each chunk
(one IOMMU mapping for the folio) at the share seen when they start, the
channels are held (trylocked) for it, and the bytes are zeroed when the last
chunk completes.  Rejected: fills as ring descriptors of power-of-two blocks
(a 2 MiB range around the warm pages is up to 18 blocks, each charged a
descriptor and per-page IOMMU costs the single mapping does not have).
"""

from __future__ import annotations

import errno
import os
import time

import trio

from ..hw import Clock, HardwareProfile
from ..mm import PAGE_SIZE, PhysMemory
from ._dcbm_newest import DCBM_CLEAR_CHUNK_BYTES, DCBM_WARM_RADIUS, NewestChannels

#: ``clear_page_erms()`` stores only: about twice ``folio_mc_copy()``'s rate.
CPU_CLEAR_FACTOR = 2.0


def cpu_clear_seconds(profile: HardwareProfile, nbytes: int) -> float:
    """The CPU's ``folio_zero_user()`` of ``nbytes``."""
    return nbytes / (profile.cpu.copy_gbps * CPU_CLEAR_FACTOR * 1e9)


def zero_pages(memory: PhysMemory, pfn: int, nr_pages: int) -> None:
    """The bytes: every word of ``[pfn, pfn + nr_pages)`` set to 0."""
    memory.arena[pfn:pfn + nr_pages] = 0


_saturated = [0.0, 0.0, False]  # wall, CPU time at the last look, the answer


def cpus_saturated() -> bool:
    """``mm_offload_cpus_saturated()``: every CPU of the emulated kernel busy,
    read as this process's CPU time over the last second reaching the CPUs
    it may use (looked at once a second).  Rejected: the host's load average
    (other processes on a shared host are not the emulated kernel's tasks; at
    a load of 6 on 2 CPUs every clear was gated)."""
    now, cpu = time.monotonic(), time.process_time()
    if now - _saturated[0] >= 1.0:
        busy = (cpu - _saturated[1]) / (now - _saturated[0])
        _saturated[:] = [now, cpu, busy >= 0.95 * len(os.sched_getaffinity(0))]
    return bool(_saturated[2])


async def folio_clear_dma(mig, memory: PhysMemory, clock: Clock, profile: HardwareProfile,
                          pfn: int, order: int, hint: int | None) -> int:
    """``folio_clear_dma()``: 0 when the folio at ``pfn`` is zero, else -errno
    (the caller clears it on the CPU).  ``hint``: the faulting page's index
    in the folio (``addr_hint``), None for none (the pool's refill)."""
    nr_pages = 1 << order
    size = nr_pages * PAGE_SIZE
    if size < mig.min_clear_bytes:
        return -errno.ENODEV
    if mig.util_gate and mig.cpus_saturated():
        mig.folios_gated += 1
        return -errno.EBUSY
    pool: NewestChannels = mig.channels
    want = max(1, min(size // DCBM_CLEAR_CHUNK_BYTES, len(pool.channels)))
    claim = pool.claim(want, int(memory.nid_of[pfn]))
    if claim is None:
        return -errno.EBUSY
    _, chans = claim
    try:
        rc = await _clear(mig, memory, clock, profile, chans, pfn, nr_pages, hint)
    finally:
        pool.release(chans)
    if rc:
        mig.clear_failures += 1
    else:
        mig.folios_cleared += 1
    return rc


def _ranges(nr_pages: int, hint: int | None, warm: bool) -> tuple[list[tuple[int, int]],
                                                                  tuple[int, int]]:
    """The DMA ranges ``[lo, hi)`` in pages and the CPU's warm range."""
    ws, we = 0, -1
    if warm and hint is not None:
        ws = max(hint - DCBM_WARM_RADIUS, 0)
        we = min(hint + DCBM_WARM_RADIUS, nr_pages - 1)
    out = []
    if ws > 0:
        out.append((0, ws))
    if we < nr_pages - 1:
        out.append((we + 1, nr_pages))
    return out, (ws, we + 1)


async def _clear(mig, memory, clock, profile, chans, pfn, nr_pages, hint) -> int:
    dev = mig.device
    model = dev.model
    if not model.memset:
        return -errno.EOPNOTSUPP
    ranges, (ws, we) = _ranges(nr_pages, hint, mig.cpu_warm)
    if mig.cache_ctrl:
        mig.cache_footprint_bytes += nr_pages * PAGE_SIZE
    # submit_clear_range(): chunks of at least 2 MiB, round-robin over the channels
    per_chan = [0.0] * len(chans)
    nbytes_chan = [0] * len(chans)
    idx = ndesc = 0
    for lo, hi in ranges:
        length = (hi - lo) * PAGE_SIZE
        nchunks = max(1, min(length // DCBM_CLEAR_CHUNK_BYTES, len(chans)))
        chunk = -(-length // nchunks)
        while length:
            n = min(chunk, length)
            per_chan[idx] += n  # bytes, timed below
            nbytes_chan[idx] += n
            idx = (idx + 1) % len(chans)
            length -= n
            ndesc += 1
    errors = dev.faults["fail_dma_desc"].should_fail_many(ndesc)
    busy = [c for c in chans if nbytes_chan[chans.index(c)]]
    active = sum(1 for c in dev.channels if c.busy) + len(busy)
    start = trio.current_time()
    ends = []
    submit = model.submit_us * 1e-6 * ndesc
    for c, nb in zip(chans, nbytes_chan, strict=True):
        if not nb:
            continue
        sharing = 1 + sum(1 for x in dev.channels if x.engine == c.engine and x.busy)
        descs = -(-nb // DCBM_CLEAR_CHUNK_BYTES) if nb > DCBM_CLEAR_CHUNK_BYTES else 1
        t = model.desc_seconds(nb, 9, sharing, active) + (descs - 1) * model.desc_us * 1e-6
        ends.append(t)
        c.account(0, nb, t)
    dma_seconds = submit + (max(ends) if ends else 0.0)
    # The CPU clears the warm pages meanwhile (clear_user_highpage()).
    cpu = cpu_clear_seconds(profile, (we - ws) * PAGE_SIZE) if we > ws else 0.0
    await clock.spend(submit + cpu)
    if we > ws:
        zero_pages(memory, pfn + ws, we - ws)
    # dma_work_wait(): everything queued runs out before the result is known
    await trio.sleep_until(start + max(dma_seconds, submit + cpu))
    if errors.any():
        return -errno.EIO
    for lo, hi in ranges:
        zero_pages(memory, pfn + lo, hi - lo)
    return 0


async def clear_folio(mig, memory: PhysMemory, clock: Clock, profile: HardwareProfile,
                      pfn: int, order: int, hint: int | None) -> tuple[int, float]:
    """``mm_offload_clear_folio()`` then, on any failure, the CPU's
    ``folio_zero_user()``; returns (the provider's result, CPU seconds the
    fault spent clearing).  ``mig``: the active provider, or None (no
    provider: the CPU clears)."""
    rc = -errno.ENXIO  # mm_offload_clear_folio_null(): no provider
    if mig is not None and mig.clears:
        rc = await mig.clear_folio(memory, clock, profile, pfn, order, hint)
    cpu = 0.0
    if rc:
        nbytes = PAGE_SIZE << order
        cpu = cpu_clear_seconds(profile, nbytes)
        await clock.spend(cpu)
        zero_pages(memory, pfn, 1 << order)
    return rc, cpu
