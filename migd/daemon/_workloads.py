"""The callers of ``migrate_pages()``, each handing it the lists and the mode the
kernel's caller hands it (the README's table of callers):

* promotion, ``migrate_misplaced_folio()`` (NUMA hinting fault): one folio per
  call, MIGRATE_ASYNC, MR_NUMA_MISPLACED; ``pgpromote_success``;
* demotion, ``shrink_folio_list()`` -> ``demote_folio_list()``: the cold folios
  of one reclaim isolation, MIGRATE_ASYNC, MR_DEMOTION; ``pgdemote_kswapd``.
  Classic LRU (``isolate_lru_folios()``): SWAP_CLUSTER_MAX (32) base pages
  scanned, ``scan += nr_pages``, so one THP or up to 32 small folios.  MGLRU
  (``evict_folios()`` -> ``scan_folios()``): until MIN_LRU_BATCH (64) base pages
  are isolated or MAX_LRU_BATCH (4096) folios scanned;
* compaction, ``isolate_migratepages_block()`` + ``compact_zone()``: lists
  that stop once ``cc->nr_migratepages`` (base pages) reaches
  COMPACT_CLUSTER_MAX (32), skipping folios of pageblock order (9) and, for a
  targeted compaction, of the target order and above
  (``skip_isolation_on_order()``), never across a pageblock; MR_COMPACTION
  with MIGRATE_SYNC for ``compact_memory``, MIGRATE_SYNC_LIGHT for
  kcompactd, MIGRATE_ASYNC then MIGRATE_SYNC_LIGHT (PF_MEMALLOC) for direct
  compaction; ``compact_*`` counters where the kernel counts them;
* move_pages(2) (``do_pages_move()``): the engine's :meth:`move_pages`, one
  MIGRATE_SYNC MR_SYSCALL call per run of pages queued for the same node;
* DAMON (``damon_migrate_pages()``): the filtered folios of one physical region
  in address order, one MIGRATE_ASYNC MR_DAMON call per run of folios on the
  same source node (none for folios already on the target);
* faults (not a caller): tenants free regions and fault them in again, THP
  and small (``System.fault``: the prezero pool, the clearing offload), at
  most ``MAX_CALLS_PER_ROUND`` folios per tenant and round; a node under
  pressure gives its parked folios back first (the pool's shrinker).

Memory hotplug offline and longterm pinning are not offered by migd.

Each loop sleeps its interval and stops when the engine is stopping.  Rates are
the emulator's pacing, not the kernel's (kswapd runs on watermarks, hinting
faults follow the scanner): at most ``MAX_CALLS_PER_ROUND`` lists per node and
round for promotion and demotion, so the daemon's Python stays bounded.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import trio

from ..migrate import LATENCY_TOLERANT
from ..mm import HPAGE_PMD_ORDER, MigrateMode, MigrateReason
from ._system import System

COMPACT_CLUSTER_MAX = 32
SWAP_CLUSTER_MAX = 32
MIN_LRU_BATCH = 64  # BITS_PER_LONG
MAX_LRU_BATCH = MIN_LRU_BATCH * 64
PAGEBLOCK_ORDER = HPAGE_PMD_ORDER
MAX_CALLS_PER_ROUND = 64


def isolation_lists(nr_pages: np.ndarray, limit: int, max_folios: int = 0) -> list[slice]:
    """Cut a folio sequence (their base-page counts) into the lists of
    successive isolations that stop once ``limit`` base pages are taken (the
    folio that reaches it included), or at ``max_folios`` folios (0: no cap)."""
    cum = np.cumsum(nr_pages)
    out, i, n = [], 0, nr_pages.size
    while i < n:
        done = int(cum[i - 1]) if i else 0
        j = min(int(np.searchsorted(cum, done + limit)) + 1, n)
        if max_folios:
            j = min(j, i + max_folios)
        out.append(slice(i, j))
        i = j
    return out


@contextmanager
def caller(sys: System, name: str):
    """Run a caller's ``migrate_pages()`` calls under its latency hint
    (``_callers``): the engine's ``batch_way()`` reads it."""
    token = LATENCY_TOLERANT.set(sys.callers[name].latency_tolerant)
    try:
        yield sys.callers[name].list_pages
    finally:
        LATENCY_TOLERANT.reset(token)


def bounded_lists(nr_pages: np.ndarray, bound: int) -> list[slice]:
    """A caller's list cut at its ``list_pages`` knob (0: one list)."""
    if bound:
        return isolation_lists(nr_pages, bound)
    return [slice(0, nr_pages.size)] if nr_pages.size else []


def lru_lists(nr_pages: np.ndarray, lru: str, bound: int = 0) -> list[slice]:
    """The lists reclaim isolates: ``isolate_lru_folios()`` (classic) or
    ``scan_folios()`` (MGLRU); ``bound``: the emulator's list bound instead."""
    if bound:
        return isolation_lists(nr_pages, bound)
    if lru == "mglru":
        return isolation_lists(nr_pages, MIN_LRU_BATCH, MAX_LRU_BATCH)
    return isolation_lists(nr_pages, SWAP_CLUSTER_MAX)


async def move_tenant(sys: System, tenant, nid: int, fraction: float = 1.0) -> None:
    """move_pages() of ``fraction`` of the tenant's folios (one address each) to ``nid``."""
    vpages = np.arange(0, tenant.nr_pages, 1 << tenant.spec.order)
    if fraction < 1.0:
        vpages = vpages[sys.rng.random(vpages.size) < fraction]
    with caller(sys, "move_pages") as bound:
        pages = np.full(vpages.size, 1 << tenant.spec.order)
        for sl in bounded_lists(pages, bound):  # one syscall per list under a bound
            await sys.engine.move_pages(tenant, vpages[sl], nid, MigrateReason.MR_SYSCALL)


async def demote_node(sys: System, nid: int, max_pages: int | None = None,
                      lru: str | None = None) -> int:
    """kswapd's reclaim of node ``nid``: isolate from the LRU, demote the cold
    folios of each isolation to the demotion target; returns pages demoted."""
    mem = sys.machine.memory
    target = mem.nodes[nid].demotion_target
    if target is None:
        return 0
    lru = lru or sys.cfg.workloads["demotion"].get("lru", "classic")
    heads = sys.folios_on(nid)
    pages = mem.folio_nr_pages(heads)
    cold = ~sys.machine.accessed[mem.index[heads]]
    budget = max_pages if max_pages is not None else int(pages.sum())
    moved = 0
    with caller(sys, "demotion") as bound:
        for sl in lru_lists(pages, lru, bound):
            if budget <= 0 or sys.engine.stopping:
                break
            demote = heads[sl][cold[sl]]  # referenced folios are rotated back
            if demote.size == 0:
                continue
            owners = sys.memcg.owners(demote)
            r = await sys.engine.migrate_pages(demote, target, MigrateReason.MR_DEMOTION,
                                               MigrateMode.MIGRATE_ASYNC)
            sys.memcg.count_moved("pgdemote_kswapd", demote, owners, r.failed)
            moved += r.stats.nr_succeeded
            budget -= int(pages[sl].sum())
    sys.node_vmstat["pgdemote_kswapd"][nid] += moved
    return moved


async def promote_node(sys: System, nid: int, fraction: float,
                       max_calls: int = MAX_CALLS_PER_ROUND) -> None:
    """NUMA hinting faults on hot folios of a lower tier: each one
    ``migrate_misplaced_folio()`` to the node that demotes into ``nid``."""
    mem = sys.machine.memory
    uppers = [n.nid for n in mem.nodes if n.demotion_target == nid]
    if not uppers:
        return
    heads = sys.folios_on(nid)
    hot = heads[sys.machine.accessed[mem.index[heads]]]
    hot = hot[sys.rng.random(hot.size) < fraction]
    with caller(sys, "promotion") as bound:
        # the kernel's: one folio per hinting fault (a bound of one page)
        for sl in isolation_lists(mem.folio_nr_pages(hot), bound or 1)[:max_calls]:
            if sys.engine.stopping:
                return
            owners = sys.memcg.owners(hot[sl])
            r = await sys.engine.migrate_pages(hot[sl], uppers[0],
                                               MigrateReason.MR_NUMA_MISPLACED,
                                               MigrateMode.MIGRATE_ASYNC)
            sys.memcg.count_moved("pgpromote_success", hot[sl], owners, r.failed)
            sys.node_vmstat["pgpromote_success"][uppers[0]] += r.stats.nr_succeeded


#: Which caller a compaction mode is (each has its own hint and bound).
COMPACTION_CALLER = {MigrateMode.MIGRATE_SYNC: "compaction",
                     MigrateMode.MIGRATE_SYNC_LIGHT: "kcompactd",
                     MigrateMode.MIGRATE_ASYNC: "direct_compaction"}


def compaction_lists(heads: np.ndarray, nr_pages: np.ndarray, skip: np.ndarray,
                     limit: int = COMPACT_CLUSTER_MAX) -> list[np.ndarray]:
    """The lists ``isolate_migratepages()`` hands ``compact_zone()``: one
    pageblock at a time (``isolate_migratepages_block()`` runs within
    ``[low_pfn, pageblock_end_pfn)``), each list stopping once
    ``cc->nr_migratepages`` reaches COMPACT_CLUSTER_MAX (the folio that
    reaches it included) or at the pageblock's end; the next list resumes
    where the last stopped, in the same pageblock.  ``heads`` in scan order
    (descending: migd's scanners are the kernel's mirrored), ``skip``: not
    isolated (``skip_isolation_on_order()``); ``limit``: COMPACT_CLUSTER_MAX,
    or the caller's ``list_pages`` bound."""
    heads, pages = heads[~skip], nr_pages[~skip]
    blocks = heads >> PAGEBLOCK_ORDER
    cut = np.flatnonzero(np.diff(blocks)) + 1
    out = []
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, heads.size], strict=True):
        out += [heads[lo:hi][sl] for sl in isolation_lists(pages[lo:hi], limit)]
    return out


async def compact_node(sys: System, nid: int, mode: MigrateMode, fraction: float = 1.0,
                       order: int = -1, memalloc: bool = False, who: str | None = None) -> int:
    """``compact_zone()`` of node ``nid`` in ``mode``; ``order`` -1 is
    ``compact_memory``'s whole-node compaction, else a target order;
    ``memalloc``: direct compaction (PF_MEMALLOC); ``who``: the caller whose
    hint and list bound apply (by default the mode's).  Returns the pages scanned.

    The migrate scanner starts at the top of the node and goes down (migd's
    buddy hands out the lowest free blocks, so its scanners are the kernel's
    mirrored), over ``fraction`` of the node's folios, to the bottom of the
    pageblock holding the last of them.  ``compact_migrate_scanned`` counts
    every pfn it passes, free or skipped, as ``isolate_migratepages_block()``
    does (``nr_scanned``); ``compact_isolated`` the pages isolated.

    Each list runs down in pfn, as the kernel's does (``isolate_migratepages_block()``
    ``list_add()``s each folio at the head), and its destinations come up from
    the lowest free page, as ``compaction_alloc()`` takes a free block's first
    page and queues the split-off rest (``freepages[]`` by order, since 6.9):
    the two sides run in opposite physical order.  The IOMMU does not see it
    (``dma._sgmap``: it merges by entry length).
    """
    mem = sys.machine.memory
    node = mem.nodes[nid]
    heads = np.sort(sys.folios_on(nid))[::-1]
    heads = heads[:max(1, int(heads.size * fraction))] if heads.size else heads
    if heads.size == 0:
        return 0
    orders = mem.folio_order[heads]
    skip = orders >= (PAGEBLOCK_ORDER if order < 0 else min(order, PAGEBLOCK_ORDER))
    vm = sys.node_vmstat
    low = (int(heads[-1]) >> PAGEBLOCK_ORDER) << PAGEBLOCK_ORDER
    scanned = node.end_pfn - max(low, node.start_pfn)
    vm["compact_migrate_scanned"][nid] += scanned
    with caller(sys, who or COMPACTION_CALLER[mode]) as bound:
        for folios in compaction_lists(heads, mem.folio_nr_pages(heads), skip,
                                       bound or COMPACT_CLUSTER_MAX):
            if sys.engine.stopping:
                break
            vm["compact_isolated"][nid] += int(mem.folio_nr_pages(folios).sum())
            await sys.engine.migrate_pages(folios, nid, MigrateReason.MR_COMPACTION, mode,
                                           memalloc=memalloc)
    return scanned


async def compact_all(sys: System) -> None:
    """``echo 1 > /proc/sys/vm/compact_memory``: every node, MIGRATE_SYNC."""
    for node in sys.machine.memory.nodes:
        await compact_node(sys, node.nid, MigrateMode.MIGRATE_SYNC)


async def kcompactd(sys: System, nid: int, fraction: float) -> None:
    """``kcompactd_do_work()``: MIGRATE_SYNC_LIGHT, for a THP-sized order;
    ``compact_daemon_wake`` once, ``compact_daemon_migrate_scanned`` the
    scanner's pages (the kernel's ``cc.total_migrate_scanned``)."""
    vm = sys.node_vmstat
    vm["compact_daemon_wake"][nid] += 1
    scanned = await compact_node(sys, nid, MigrateMode.MIGRATE_SYNC_LIGHT, fraction,
                                 HPAGE_PMD_ORDER)
    vm["compact_daemon_migrate_scanned"][nid] += scanned


async def direct_compact(sys: System, nid: int, order: int, fraction: float = 1.0) -> bool:
    """``__alloc_pages_direct_compact()`` as the allocator's slow path calls it:
    COMPACT_PRIO_ASYNC first, then COMPACT_PRIO_SYNC_LIGHT, each under
    PF_MEMALLOC; after each, ``compact_stall``, then ``compact_success`` if an
    ``order`` block is free on the node (``get_page_from_freelist()`` would
    succeed; migd leaves the block free) and the second try is not made, else
    ``compact_fail``.  Returns whether the allocation would succeed."""
    vm = sys.node_vmstat
    for mode in (MigrateMode.MIGRATE_ASYNC, MigrateMode.MIGRATE_SYNC_LIGHT):
        await compact_node(sys, nid, mode, fraction, order, memalloc=True,
                           who="direct_compaction")
        vm["compact_stall"][nid] += 1
        free = sys.machine.memory.free_area.nr_free_blocks(nid)
        if any(free[order:]):
            vm["compact_success"][nid] += 1
            return True
        vm["compact_fail"][nid] += 1
        if sys.engine.stopping:
            break
    return False


async def damon_migrate(sys: System, start_pfn: int, end_pfn: int, target_nid: int,
                        hot: bool) -> int:
    """DAMOS ``migrate_hot`` / ``migrate_cold`` on the physical region
    ``[start_pfn, end_pfn)``: the folios passing the access filter, in address
    order (``damon_pa_migrate()``), then ``damon_migrate_pages()``: one call per
    run on the same source node, none for a run already on the target."""
    mem = sys.machine.memory
    heads = [sys.machine.tenant_folios(t) for t in sys.tenants]
    heads = np.sort(np.concatenate(heads)) if heads else np.empty(0, dtype=np.int64)
    heads = heads[(heads >= start_pfn) & (heads < end_pfn)]
    heads = heads[sys.machine.accessed[mem.index[heads]] == hot]
    nids = mem.nid_of[heads]
    cut = np.flatnonzero(np.diff(nids)) + 1
    moved = 0
    with caller(sys, "damon") as bound:
        for run in np.split(heads, cut):
            if run.size == 0 or int(mem.nid_of[run[0]]) == target_nid or sys.engine.stopping:
                continue
            for sl in bounded_lists(mem.folio_nr_pages(run), bound):
                r = await sys.engine.migrate_pages(run[sl], target_nid, MigrateReason.MR_DAMON,
                                                   MigrateMode.MIGRATE_ASYNC)
                moved += r.stats.nr_succeeded
    return moved


async def run_workloads(sys: System) -> None:
    """Every enabled workload of the config, each at its own interval."""
    async with trio.open_nursery() as nursery:
        for name, w in sys.cfg.workloads.items():
            if w["enabled"]:
                nursery.start_soon(_loop, sys, name, w)


async def _loop(sys: System, name: str, w: dict) -> None:
    mem = sys.machine.memory
    nn = len(mem.nodes)
    interval, fraction = w["interval"], w["fraction"]
    while not sys.engine.stopping:
        await trio.sleep(interval)
        if sys.engine.stopping:
            return
        if name == "move" and sys.tenants and nn > 1:
            t = sys.tenants[sys.rng.integers(len(sys.tenants))]
            where = np.bincount(mem.nid_of[t.pte_pfn], minlength=nn)
            await move_tenant(sys, t, int(np.argmin(where)), fraction)
        elif name == "fault":
            for t in sys.tenants:
                heads = np.arange(0, t.nr_pages, 1 << t.spec.order)
                pick = heads[sys.rng.random(heads.size) < fraction][:MAX_CALLS_PER_ROUND]
                for vhead in pick.tolist():
                    if sys.engine.stopping:
                        return
                    await sys.fault(t, vhead)
        elif name == "demotion":
            for node in mem.nodes:
                sys.prezero.relieve(node.nid)  # the shrinker before demoting
                if node.demotion_target is not None:
                    heads = sys.folios_on(node.nid)
                    budget = int(mem.folio_nr_pages(heads).sum() * fraction)
                    budget = min(budget, MAX_CALLS_PER_ROUND * SWAP_CLUSTER_MAX)
                    await demote_node(sys, node.nid, budget, w.get("lru"))
            sys.machine.accessed[:] = False  # aging
        elif name == "promotion":
            for node in mem.nodes:
                await promote_node(sys, node.nid, fraction)
        elif name == "compaction":
            for node in mem.nodes:
                await kcompactd(sys, node.nid, fraction)
        elif name == "damon":
            node = mem.nodes[sys.rng.integers(nn)]
            span = max(1, int(node.nr_pages * fraction))
            lo = node.start_pfn + int(sys.rng.integers(max(1, node.nr_pages - span)))
            if node.demotion_target is not None:  # migrate_cold down a tier
                await damon_migrate(sys, lo, lo + span, node.demotion_target, hot=False)
            else:
                uppers = [n.nid for n in mem.nodes if n.demotion_target == node.nid]
                if uppers:  # migrate_hot up a tier
                    await damon_migrate(sys, lo, lo + span, uppers[0], hot=True)
