"""The per-node prezero pool (mm/prezero_pool.c of the newest iteration) and the
anonymous fault that uses it and the clearing offload.

``PrezeroPool`` follows the kernel file: ``prezero_refill_fn()`` allocates PMD
folios on the nodes a fault has asked for (``pool_wanted``), clears each
through the provider (``mm_offload_clear_folio(folio, 0)``; a failure stops
the refill) and parks it; ``prezero_pool_get()`` hands a THP fault a parked
folio (``hits``; a refill is scheduled below half of ``max_per_node``) or
counts a ``miss`` and schedules one; disabling flushes the refill and drains;
lowering ``max_per_node`` trims; ``prezero_pool_scan()`` (the shrinker) gives
parked folios back under memory pressure.  Parked folios are allocated, so
they count as used memory.  Not modelled: the memory-offline notifier (migd
has no memory hotplug) and the mempolicy/cpuset check (tenants have none).

:func:`anon_fault` is ``do_huge_pmd_anonymous_page()`` / ``do_anonymous_page()``
after the region was freed: a THP fault takes a pool folio if there is one,
else allocates and clears (``folio_zero_user()``, whose offloaded form is
``mm_offload_clear_folio()`` with the faulting address as hint, the CPU
clearing on any failure); then the folio is mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trio

from ..hw import Clock, HardwareProfile
from ..mm import HPAGE_PMD_NR, HPAGE_PMD_ORDER, Machine, Tenant
from ._dcbm_clear import clear_folio, cpu_clear_seconds
from ._registry import OffloadRegistry

MAX_PER_NODE_DEFAULT = 256
#: A node with fewer free pages than this fraction of its size is under
#: pressure: the shrinker gives parked folios back first (``prezero_pool_scan``).
PRESSURE_FRACTION = 1 / 8
#: A fault without its clear: the allocation (or the pool's list_del) and the
#: PMD or PTE install, ~1 us on a 3 GHz core (an assumption, not calibrated).
FAULT_BASE_US = 1.0


class PrezeroPool:
    """``kernel/mm/prezero_pool/``: ``enabled``, ``max_per_node``, ``size``,
    ``hits``, ``misses``."""

    def __init__(self, machine: Machine, registry: OffloadRegistry, clock: Clock,
                 profile: HardwareProfile) -> None:
        self.machine = machine
        self.registry = registry
        self.clock = clock
        self.profile = profile
        self.enabled = False
        self.max_per_node = MAX_PER_NODE_DEFAULT
        nn = len(machine.memory.nodes)
        self.parked: list[list[int]] = [[] for _ in range(nn)]
        self.wanted: set[int] = set()
        self.hits = np.zeros(nn, dtype=np.int64)
        self.misses = np.zeros(nn, dtype=np.int64)
        self._work = trio.Event()
        self._refilling = False
        self._refill_done = trio.Event()
        self._refill_done.set()

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parked)

    def node_size(self, nid: int) -> int:
        return len(self.parked[nid])

    def schedule_work(self) -> None:
        self._work.set()

    def clear_available(self) -> bool:
        """``mm_offload_clear_available()``: the active provider clears."""
        return self.registry.active.migrator.clears

    async def run(self) -> None:
        """The refill worker (``refill_work``), until cancelled."""
        while True:
            await self._work.wait()
            self._work = trio.Event()
            self._refilling = True
            self._refill_done = trio.Event()
            try:
                await self.refill()
            finally:
                self._refilling = False
                self._refill_done.set()

    async def refill(self) -> None:
        """``prezero_refill_fn()``."""
        mem = self.machine.memory
        for nid in sorted(self.wanted):
            while (self.enabled and self.clear_available()
                   and len(self.parked[nid]) < self.max_per_node and not self.pressured(nid)):
                got = mem.folio_alloc(nid, HPAGE_PMD_ORDER, 1)
                if not got.size:
                    break
                with self.registry.read_lock() as offload:
                    rc = await offload.migrator.clear_folio(mem, self.clock, self.profile,
                                                            int(got[0]), HPAGE_PMD_ORDER, None)
                if rc or not self.enabled:
                    mem.folio_put(got)
                    break
                self.parked[nid].append(int(got[0]))

    def get(self, nid: int) -> int:
        """``prezero_pool_get()``: a parked folio's head pfn, or -1."""
        if not self.enabled:
            return -1
        self.wanted.add(nid)
        if self.parked[nid]:
            pfn = self.parked[nid].pop()
            self.hits[nid] += 1
            if len(self.parked[nid]) < self.max_per_node // 2:
                self.schedule_work()
            return pfn
        self.misses[nid] += 1
        self.schedule_work()
        return -1

    def trim(self, nid: int, keep: int) -> int:
        """``prezero_pool_trim()``: back to the buddy until ``keep`` remain."""
        parked = self.parked[nid]
        drop = parked[keep:] if len(parked) > keep else []
        del parked[keep:]
        if drop:
            self.machine.memory.folio_put(np.array(drop, dtype=np.int64))
        return len(drop)

    async def set_enabled(self, on: bool) -> None:
        """``enabled_store()``: 1 schedules a refill; 0 flushes it and drains."""
        self.enabled = on
        if on:
            self.schedule_work()
            return
        if self._refilling:
            await self._refill_done.wait()  # flush_work()
        for nid in range(len(self.parked)):
            self.trim(nid, 0)

    def set_max_per_node(self, n: int) -> None:
        """``max_per_node_store()``: a lower limit trims what is parked."""
        self.max_per_node = n
        if self.enabled:
            self.schedule_work()
        for nid in range(len(self.parked)):
            self.trim(nid, n)

    def pressured(self, nid: int) -> bool:
        node = self.machine.memory.nodes[nid]
        return node.nr_free_pages < node.nr_pages * PRESSURE_FRACTION

    def shrink(self, nid: int, nr_to_scan: int) -> int:
        """``prezero_pool_scan()``: give back ``nr_to_scan`` base pages' worth
        (rounded up to PMDs); returns the pages freed."""
        nr = -(-nr_to_scan // HPAGE_PMD_NR)
        count = len(self.parked[nid])
        return self.trim(nid, max(count - nr, 0)) * HPAGE_PMD_NR

    def relieve(self, nid: int) -> int:
        """Reclaim's first step on a node under pressure: the shrinker, before
        a demotion or a failed allocation would have to happen."""
        freed = 0
        while self.pressured(nid) and self.parked[nid]:
            freed += self.shrink(nid, HPAGE_PMD_NR)
        return freed


@dataclass
class Fault:
    """One fault's outcome: how it got a zeroed folio and what it cost."""

    how: str  # pool | dma | cpu | none (no memory, or the region is busy)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    at: float = 0.0  # when the zeroed folio was mapped (trio's clock)


async def anon_fault(machine: Machine, tenant: Tenant, vhead: int, registry: OffloadRegistry,
                     pool: PrezeroPool | None, clock: Clock, profile: HardwareProfile) -> Fault:
    """The region at ``vhead`` (one folio of the tenant's order) freed and faulted
    in again on its node: a zeroed folio mapped, its content checked as zero."""
    mem = machine.memory
    order = tenant.spec.order
    old = machine.replaceable(tenant, vhead)
    if old < 0:
        return Fault("none")
    nid = int(mem.nid_of[old])
    t0 = trio.current_time()
    await clock.spend(FAULT_BASE_US * 1e-6)
    new, how, cpu = -1, "none", 0.0
    if order == HPAGE_PMD_ORDER and pool is not None:
        new = pool.get(nid)
        how = "pool" if new >= 0 else how
    if new < 0:
        got = mem.folio_alloc(nid, order, 1)
        if not got.size and pool is not None:
            pool.shrink(nid, 1 << order)  # the shrinker before the allocation fails
            got = mem.folio_alloc(nid, order, 1)
        if not got.size:
            return Fault("none")
        new = int(got[0])
        with registry.read_lock() as offload:
            rc, cpu = await clear_folio(offload.migrator, mem, clock, profile, new, order,
                                        vhead & ((1 << order) - 1))
        how = "cpu" if rc else "dma"
        if not rc and offload.migrator.cpu_warm:
            cpu = cpu_clear_seconds(profile, 5 * 4096)
    if machine.replaceable(tenant, vhead) != old:  # migrated or locked meanwhile
        if how == "pool":
            pool.parked[nid].append(new)
        else:
            mem.folio_put(np.array([new], dtype=np.int64))
        return Fault("none")
    machine.map_cleared(tenant, vhead, old, new)
    now = trio.current_time()
    return Fault(how, now - t0, cpu, now)
