"""The callers of ``migrate_pages()``: each with its kernel reason and its own pace.

* move (MR_SYSCALL): ``move_pages(2)`` of part of a tenant to another node;
* demotion (MR_DEMOTION): cold folios (accessed bit clear) of a node with a
  demotion target go down a tier, then the accessed bits are aged (cleared),
  as kswapd's reclaim does; counted in ``pgdemote_kswapd``;
* promotion (MR_NUMA_MISPLACED): hot folios (accessed bit set) on a lower tier
  come back up, as NUMA-hinting faults would; ``pgpromote_success``;
* compaction (MR_COMPACTION): the folios at the top of a node are migrated
  within it, ``COMPACT_CLUSTER_MAX`` (32) at a time, so free memory gathers in
  large blocks; ``compact_*`` counters.

Each loop sleeps its interval and stops when the engine is stopping.
"""

from __future__ import annotations

import numpy as np
import trio

from ..mm import MigrateMode, MigrateReason
from ._system import System

COMPACT_CLUSTER_MAX = 32


async def move_tenant(sys: System, tenant, nid: int, fraction: float = 1.0) -> None:
    """move_pages() of ``fraction`` of the tenant's pages to node ``nid``."""
    vpages = np.arange(tenant.nr_pages)
    if fraction < 1.0:
        vpages = vpages[sys.rng.random(vpages.size) < fraction]
    await sys.engine.move_pages(tenant, vpages, nid, MigrateReason.MR_SYSCALL)


async def demote_node(sys: System, nid: int, max_pages: int | None = None) -> int:
    """Demote cold folios of node ``nid`` to its demotion target; returns pages moved."""
    mem = sys.machine.memory
    target = mem.nodes[nid].demotion_target
    if target is None:
        return 0
    heads = sys.folios_on(nid)
    cold = heads[~sys.machine.accessed[mem.index[heads]]]
    if max_pages is not None:
        pages = np.cumsum(mem.folio_nr_pages(cold))
        cold = cold[:int(np.searchsorted(pages, max_pages, side="right"))]
    r = await sys.engine.migrate_pages(cold, target, MigrateReason.MR_DEMOTION)
    sys.node_vmstat["pgdemote_kswapd"][nid] += r.stats.nr_succeeded
    return r.stats.nr_succeeded


async def promote_node(sys: System, nid: int, fraction: float) -> None:
    """Promote hot folios of a lower-tier node to the node that demotes into it."""
    mem = sys.machine.memory
    uppers = [n.nid for n in mem.nodes if n.demotion_target == nid]
    if not uppers:
        return
    heads = sys.folios_on(nid)
    hot = heads[sys.machine.accessed[mem.index[heads]]]
    hot = hot[sys.rng.random(hot.size) < fraction]
    r = await sys.engine.migrate_pages(hot, uppers[0], MigrateReason.MR_NUMA_MISPLACED)
    sys.node_vmstat["pgpromote_success"][uppers[0]] += r.stats.nr_succeeded


async def compact_node(sys: System, nid: int, fraction: float = 1.0) -> None:
    """Migrate the highest folios of ``nid`` within it, 32 at a time."""
    heads = sys.folios_on(nid)
    heads = np.sort(heads)[::-1][:max(1, int(heads.size * fraction))]
    ok = True
    for lo in range(0, heads.size, COMPACT_CLUSTER_MAX):
        if sys.engine.stopping:
            return
        cluster = heads[lo:lo + COMPACT_CLUSTER_MAX]
        sys.node_vmstat["compact_migrate_scanned"][nid] += int(cluster.size)
        sys.node_vmstat["compact_isolated"][nid] += int(cluster.size)
        r = await sys.engine.migrate_pages(cluster, nid, MigrateReason.MR_COMPACTION,
                                           MigrateMode.MIGRATE_ASYNC)
        ok &= r.rc == 0
    if ok:
        sys.node_vmstat["compact_success"][nid] += 1


async def compact_all(sys: System) -> None:
    """``echo 1 > /proc/sys/vm/compact_memory``."""
    for node in sys.machine.memory.nodes:
        await compact_node(sys, node.nid)


async def run_workloads(sys: System) -> None:
    """Every enabled workload of the config, each at its own interval."""
    async with trio.open_nursery() as nursery:
        for name, w in sys.cfg.workloads.items():
            if w["enabled"]:
                nursery.start_soon(_loop, sys, name, w["interval"], w["fraction"])


async def _loop(sys: System, name: str, interval: float, fraction: float) -> None:
    mem = sys.machine.memory
    nn = len(mem.nodes)
    while not sys.engine.stopping:
        await trio.sleep(interval)
        if sys.engine.stopping:
            return
        if name == "move" and sys.tenants and nn > 1:
            t = sys.tenants[sys.rng.integers(len(sys.tenants))]
            where = np.bincount(mem.nid_of[t.pte_pfn], minlength=nn)
            await move_tenant(sys, t, int(np.argmin(where)), fraction)
        elif name == "demotion":
            for node in mem.nodes:
                if node.demotion_target is not None:
                    heads = sys.folios_on(node.nid)
                    budget = int(mem.folio_nr_pages(heads).sum() * fraction)
                    await demote_node(sys, node.nid, budget)
            sys.machine.accessed[:] = False  # aging
        elif name == "promotion":
            for node in mem.nodes:
                await promote_node(sys, node.nid, fraction)
        elif name == "compaction":
            for node in mem.nodes:
                await compact_node(sys, node.nid, fraction)
