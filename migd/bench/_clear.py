"""``migd bench clear``: what a THP fault costs by how its folio is zeroed.

Modes, each ``FAULTS`` faults of a 2 MiB region of a tenant (freed and
faulted again, ``offload.anon_fault``), the newest dcbm active on the profile:

* ``cpu``: no clearing provider; ``folio_zero_user()`` on the faulting CPU;
* ``dma``: ``mm_offload_clear_folio()`` at fault time, ``cpu_warm`` on (the
  CPU clears the faulting neighbourhood while the channels clear the rest);
* ``dma-cold``: the same without ``cpu_warm``;
* ``pool``: a prezero pool filled beforehand: every fault a hit.

A fault's latency is until the folio is mapped plus the first touch of the
faulting page: a cache hit when the CPU cleared it last (``cpu``, ``cpu_warm``)
or the DMA wrote it with ``cache_ctrl`` (cache-allocating writes), else a
miss to memory (4 KiB at the CPU's copy rate; a pool folio was cleared long
before).  CPU per fault is the clearing CPU time.  Then the pool's hit rate
against the fault rate and ``max_per_node``, the refill running beside.
"""

from __future__ import annotations

import numpy as np
import trio

from ..dma import DmaDevice
from ..hw import Clock, VirtualClock, get_profile
from ..migrate import MigrationEngine
from ..mm import HPAGE_PMD_ORDER, PAGE_SIZE, Machine, NodeSpec, TenantSpec
from ..offload import DcbmMigrator, PrezeroPool, anon_fault
from ._report import BenchReport, BenchRow

FAULTS = 64
MODES = ("cpu", "dma", "dma-cold", "pool")
#: Pool hit rate grid: faults per second and max_per_node.
RATES = (200, 2000, 20000)
MAX_PER_NODE = (8, 64)


class _Rig:
    def __init__(self, opts, profile: str) -> None:
        self.clock = VirtualClock() if opts.clock == "virtual" else Clock()
        self.profile = get_profile(profile)
        size = FAULTS * (2 << 20)
        cap = 4 * size
        self.machine = Machine([NodeSpec(cap, "dram"), NodeSpec(cap, "far")],
                               words_per_page=1 if self.clock.virtual else None)
        self.tenant = self.machine.add_tenant(TenantSpec("faulter", size, HPAGE_PMD_ORDER))
        self.engine = MigrationEngine(self.machine, self.clock, self.profile)
        self.dma = DmaDevice(0, self.machine.memory, self.clock, self.profile.dma,
                             self.engine.faults)
        self.dcbm = DcbmMigrator(self.dma, min(4, self.profile.dma.nr_channels),
                                 variant="newest")
        self.dcbm.cpus_saturated = lambda: False  # the bench's CPUs are idle
        self.pool = PrezeroPool(self.machine, self.engine.registry, self.clock, self.profile)

    async def faults(self, n: int, gap: float = 0.0) -> list:
        out = []
        for i in range(n):
            vhead = (i % FAULTS) << HPAGE_PMD_ORDER
            out.append(await anon_fault(self.machine, self.tenant, vhead,
                                        self.engine.registry, self.pool, self.clock,
                                        self.profile))
            if gap:
                await trio.sleep(gap)
        return out


def _touch_seconds(profile, warm: bool) -> float:
    return 0.0 if warm else PAGE_SIZE / (profile.cpu.copy_gbps * 1e9)


async def _mode(opts, profile: str, mode: str) -> BenchRow:
    rig = _Rig(opts, profile)
    warm = mode in ("cpu", "dma")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.dma.run)
        nursery.start_soon(rig.pool.run)
        if mode != "cpu":
            rig.engine.registry.register(rig.dcbm)
        rig.dcbm.cpu_warm = mode == "dma"
        if mode == "pool":
            rig.pool.max_per_node = FAULTS
            await rig.pool.set_enabled(True)
            rig.pool.wanted.add(0)
            await rig.pool.refill()
        t0 = trio.current_time()
        faults = await rig.faults(FAULTS)
        seconds = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    if mode in ("dma", "dma-cold") and rig.dcbm.cache_ctrl:
        warm = True
    lat = np.array([f.seconds for f in faults]) + _touch_seconds(rig.profile, warm)
    cpu = np.array([f.cpu_seconds for f in faults])
    hows = sorted({f.how for f in faults})
    report = rig.machine.check_integrity()
    if not report.ok:
        raise RuntimeError(f"integrity check failed after clear {mode}: {report}")
    nbytes = FAULTS * (2 << 20)
    return BenchRow(
        "dcbm" if mode != "cpu" else "none", rig.dcbm.nr_dma_chan if mode != "cpu" else 0,
        HPAGE_PMD_ORDER, 2 << 20, 512, nbytes, seconds, nbytes / seconds / 1e9,
        None, None, None, True,
        extra={"mode": mode, "profile": profile, "got": ",".join(hows),
               "fault_us_p50": float(np.percentile(lat, 50)) * 1e6,
               "fault_us_p99": float(np.percentile(lat, 99)) * 1e6,
               "cpu_us_per_fault": float(cpu.mean()) * 1e6})


async def _hit_rate(opts, profile: str, rate: int, max_per_node: int) -> BenchRow:
    rig = _Rig(opts, profile)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.dma.run)
        nursery.start_soon(rig.pool.run)
        rig.engine.registry.register(rig.dcbm)
        rig.pool.max_per_node = max_per_node
        await rig.pool.set_enabled(True)
        t0 = trio.current_time()
        faults = await rig.faults(4 * FAULTS, 1.0 / rate)
        seconds = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    hits, misses = int(rig.pool.hits.sum()), int(rig.pool.misses.sum())
    nbytes = len(faults) * (2 << 20)
    return BenchRow("dcbm", rig.dcbm.nr_dma_chan, HPAGE_PMD_ORDER, 2 << 20, 512, nbytes,
                    seconds, nbytes / seconds / 1e9, None, None, None, False,
                    extra={"mode": f"pool@{rate}/s", "profile": profile,
                           "max_per_node": max_per_node,
                           "hit_pct": 100.0 * hits / max(1, hits + misses)})


async def clear(opts) -> BenchReport:
    profiles = [opts.profile] if opts.profile else (
        ["native", "zen3-ptdma", "sdxi", "dsa"] if opts.clock == "virtual" else ["native"])
    rows = []
    for profile in profiles:
        for mode in MODES:
            opts.progress(f"{profile}: {mode}")
            rows.append(await _mode(opts, profile, mode))
        for rate in RATES:
            for mpn in MAX_PER_NODE:
                opts.progress(f"{profile}: pool at {rate} faults/s, max_per_node {mpn}")
                rows.append(await _hit_rate(opts, profile, rate, mpn))
    notes = ["a fault: free a 2 MiB region and fault it in again; latency to the mapped "
             "folio plus the first touch of the faulting page (a cache miss unless the CPU "
             "cleared it last or cache_ctrl wrote it to LLC)",
             "profiles without DMA_MEMSET (zen3-ptdma, sdxi) refuse clears "
             "(-EOPNOTSUPP): their dma rows are CPU clears after a failed offer, and "
             "their pool never fills"]
    return BenchReport("clear", opts.clock, opts.profile or ",".join(profiles), rows, notes)
