"""The callers of migrate_pages(): the list and the mode of every call each one
makes, against the kernel's code (mm/vmscan.c, mm/compaction.c, mm/migrate.c,
mm/damon), and dcbm / PTDMA as RFC v6 writes them.  Expectations are worked
by hand from that code, never from migd's own helpers."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import trio

from migd.daemon._config import load_config
from migd.daemon._system import System
from migd.daemon._workloads import (
    compact_all,
    damon_migrate,
    demote_node,
    direct_compact,
    kcompactd,
    promote_node,
)
from migd.dma import DmaDevice
from migd.hw import VirtualClock, get_profile
from migd.migrate import MigrationEngine
from migd.mm import MigrateMode, MigrateReason, TenantSpec
from migd.offload import DcbmMigrator

from .helpers import BARE, MiB, config, make_machine


@dataclass
class Call:
    orders: list[int]
    target: int
    reason: MigrateReason
    mode: MigrateMode


def record_calls(engine) -> list[Call]:
    """Wrap ``engine.migrate_pages`` to record each call's list and mode."""
    calls: list[Call] = []
    orig = engine.migrate_pages

    async def wrapper(folios, target_nid, reason, mode=MigrateMode.MIGRATE_ASYNC):
        folios = np.asarray(folios, dtype=np.int64)
        calls.append(Call(engine.memory.folio_order[folios].tolist(), target_nid, reason, mode))
        return await orig(folios, target_nid, reason, mode)

    engine.migrate_pages = wrapper
    return calls


def system(tenants: list[TenantSpec], extra: str = "") -> System:
    """A daemon's System with two 8 MiB nodes and ``tenants`` (added after the
    config: its sizes are whole 2 MiB, too coarse for these lists)."""
    sys = System(load_config(text=config("8M", [], **BARE) + extra))
    sys.tenants += [sys.machine.add_tenant(t) for t in tenants]
    return sys


def tenant(name: str, size: int, order: int, node: int = 0) -> TenantSpec:
    return TenantSpec(name, size, order=order, home_node=node)


KiB = 1024
# 40 small folios, then 16 order-2 folios: the LRU order of node 0's folios.
MIXED = [tenant("a", 160 * KiB, 0), tenant("b", 256 * KiB, 2)]


@pytest.mark.parametrize("lru, want", [
    # isolate_lru_folios(): scan += nr_pages until scan >= SWAP_CLUSTER_MAX (32):
    # 32 x 4K | 8 x 4K + 6 x 16K (8 + 24 = 32) | 8 x 16K | the last 2 x 16K
    ("classic", [[0] * 32, [0] * 8 + [2] * 6, [2] * 8, [2] * 2]),
    # scan_folios(): until isolated >= MIN_LRU_BATCH (64): 40 + 6 x 4 = 64 | 10 x 16K
    ("mglru", [[0] * 40 + [2] * 6, [2] * 10]),
])
async def test_demotion_hands_over_one_reclaim_isolation(lru, want):
    sys = system(MIXED, f'[workloads.demotion]\nlru = "{lru}"\n')
    calls = record_calls(sys.engine)
    moved = await demote_node(sys, 0)
    assert [c.orders for c in calls] == want
    assert {(c.target, c.reason, c.mode) for c in calls} == {
        (1, MigrateReason.MR_DEMOTION, MigrateMode.MIGRATE_ASYNC)}
    assert moved == 40 + 64 == sys.node_vmstat["pgdemote_kswapd"][0]
    assert sys.machine.check_integrity().ok


async def test_demotion_of_thps_is_one_thp_per_list_and_hot_folios_stay():
    sys = system([tenant("t", 4 * MiB, 9), tenant("s", 128 * KiB, 0)])
    mem = sys.machine.memory
    small = sys.machine.tenant_folios(sys.tenants[1])
    sys.machine.accessed[mem.index[small[::2]]] = True  # every other 4K folio is hot
    calls = record_calls(sys.engine)
    await demote_node(sys, 0)
    # a THP is 512 pages >= 32: each isolation takes exactly one; the 32 small
    # folios are one isolation, of which the 16 cold ones are demoted
    assert [c.orders for c in calls] == [[9]] * 2 + [[0] * 16]
    where = mem.nid_of[sys.tenants[1].pte_pfn]  # each 4K page's node, in address order
    assert (where[::2] == 0).all() and (where[1::2] == 1).all()


async def test_promotion_is_one_folio_per_hinting_fault():
    sys = system([tenant("t", 256 * KiB, 2, node=1)])
    mem = sys.machine.memory
    heads = sys.machine.tenant_folios(sys.tenants[0])
    sys.machine.accessed[mem.index[heads[:5]]] = True
    calls = record_calls(sys.engine)
    await promote_node(sys, 1, fraction=1.0)
    assert [c.orders for c in calls] == [[2]] * 5
    assert {(c.target, c.reason, c.mode) for c in calls} == {
        (0, MigrateReason.MR_NUMA_MISPLACED, MigrateMode.MIGRATE_ASYNC)}
    assert sys.node_vmstat["pgpromote_success"][0] == 5 * 4


def check_compaction_lists(calls: list[Call], mode: MigrateMode, nr_small: int) -> None:
    """isolate_migratepages_block(): a list stops once nr_migratepages >= 32
    base pages, the folio that reaches it included; pageblock-order folios are
    never isolated; compact_zone() migrates each list within the node."""
    pages = [[1 << o for o in c.orders] for c in calls]
    for i, p in enumerate(pages):
        assert sum(p[:-1]) < 32
        assert sum(p) >= 32 or i == len(pages) - 1
    assert all(9 not in c.orders for c in calls)
    assert sum(len(c.orders) for c in calls) == nr_small
    assert {(c.target, c.reason, c.mode) for c in calls} == {
        (0, MigrateReason.MR_COMPACTION, mode)}


async def test_compact_memory_is_sync_and_kcompactd_sync_light():
    sys = system(MIXED + [tenant("thp", 2 * MiB, 9)])
    calls = record_calls(sys.engine)
    await compact_all(sys)
    check_compaction_lists(calls, MigrateMode.MIGRATE_SYNC, 40 + 16)
    calls.clear()
    await kcompactd(sys, 0, fraction=1.0)
    check_compaction_lists(calls, MigrateMode.MIGRATE_SYNC_LIGHT, 40 + 16)
    assert sys.node_vmstat["compact_isolated"][0] == 2 * (40 + 64)
    assert sys.node_vmstat["compact_migrate_scanned"][0] == 2 * (40 + 64 + 512)
    assert sys.machine.check_integrity().ok


async def test_direct_compaction_tries_async_then_sync_light():
    sys = system(MIXED)
    mem = sys.machine.memory
    pinned = sys.machine.tenant_folios(sys.tenants[0])[:1]
    mem.refcount[pinned] += 1  # one folio cannot move: the async attempt fails
    calls = record_calls(sys.engine)
    await direct_compact(sys, 0, order=4)
    modes = [c.mode for c in calls]
    k = modes.index(MigrateMode.MIGRATE_SYNC_LIGHT)
    assert set(modes[:k]) == {MigrateMode.MIGRATE_ASYNC}
    assert set(modes[k:]) == {MigrateMode.MIGRATE_SYNC_LIGHT}
    mem.refcount[pinned] -= 1
    # targeted at order 4: folios of order >= 4 are skipped (skip_isolation_on_order)
    calls.clear()
    sys2 = system([tenant("a", 64 * KiB, 0), tenant("b", 256 * KiB, 4)])
    calls = record_calls(sys2.engine)
    await direct_compact(sys2, 0, order=4)
    assert [o for c in calls for o in c.orders] == [0] * 16


async def test_move_pages_is_one_sync_call_per_run():
    sys = system([tenant("s", 64 * KiB, 0), tenant("t", 4 * MiB, 9)])
    small, thp = sys.tenants
    calls = record_calls(sys.engine)
    # do_pages_move(): pages 0-1 -> node 1 (a run); page 2 -> node 0 changes
    # node (flush: call 1) and is already there (nothing queued); pages 3-5 ->
    # node 1 (a run, flushed by page 6's node change: call 2); pages 6-7 are
    # already on node 0; pages 8-9 -> node 1 (call 3, at the end)
    vpages = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    nodes = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1])
    await sys.engine.move_pages(small, vpages, nodes)
    assert [len(c.orders) for c in calls] == [2, 3, 2]
    assert {(c.target, c.reason, c.mode) for c in calls} == {
        (1, MigrateReason.MR_SYSCALL, MigrateMode.MIGRATE_SYNC)}
    calls.clear()
    # every base page of two THPs: the second page of each finds it isolated
    # (-EBUSY) and flushes, so one call per THP; one address per folio: one call
    await sys.engine.move_pages(thp, np.arange(thp.nr_pages), 1)
    assert [c.orders for c in calls] == [[9], [9]]
    calls.clear()
    await sys.engine.move_pages(thp, np.arange(0, thp.nr_pages, 512), 0)
    assert [c.orders for c in calls] == [[9, 9]]
    assert sys.machine.check_integrity().ok


async def test_damon_migrates_a_region_per_source_node_run():
    sys = system([tenant("a", 128 * KiB, 0), tenant("b", 128 * KiB, 1, node=1)])
    mem = sys.machine.memory
    calls = record_calls(sys.engine)
    # a region over both nodes: node 0's cold folios go to node 1 in one call
    # (address order, one list for the run); node 1's run is already there
    moved = await damon_migrate(sys, 0, int(mem.nid_of.size), 1, hot=False)
    assert [c.orders for c in calls] == [[0] * 32]
    assert (calls[0].reason, calls[0].mode) == (MigrateReason.MR_DAMON,
                                               MigrateMode.MIGRATE_ASYNC)
    assert moved == 32 and all((mem.nid_of[t.pte_pfn] == 1).all() for t in sys.tenants)


# -- dcbm as RFC v6, PTDMA topology ---------------------------------------------------

def rig(profile: str = "zen3-ptdma"):
    m = make_machine(True, node_mib=16)
    e = MigrationEngine(m, VirtualClock(), get_profile(profile))
    return m, e, DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)


#: folios_per_chan = nr*(i+1)/c - nr*i/c with c = min(nr_dma_chan, nr, 16),
#: worked by hand.
SLICES = [
    (10, 4, [2, 3, 2, 3]),
    (7, 3, [2, 2, 3]),
    (5, 16, [1, 1, 1, 1, 1]),
    (1, 16, [1]),
    (33, 16, [2] * 15 + [3]),
    (64, 6, [10, 11, 11, 10, 11, 11]),
]


@pytest.mark.parametrize("nr_folios, nr_dma_chan, want", SLICES)
async def test_dcbm_slices_match_the_hand_table(autojump_clock, nr_folios, nr_dma_chan, want):
    m, e, dma = rig()
    t = m.add_tenant(TenantSpec("t", nr_folios * 4096, order=0))
    e.registry.register(DcbmMigrator(dma, nr_dma_chan=nr_dma_chan))
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert [c.memcpy_count for c in dma.channels if c.memcpy_count] == want
    assert [c.name for c in dma.channels[:3]] == ["dma0chan0", "dma1chan0", "dma2chan0"]


@pytest.mark.parametrize("profile, unmarked", [("dsa", 256), ("sdxi", 128)])
async def test_one_failed_descriptor_fails_the_whole_v6_batch(autojump_clock, profile,
                                                              unmarked):
    """v6: nothing marked, folios_failures += nr_folios, the CPU copies the
    batch in the move loop.  sdxi's ring-chunked variant keeps the chunks
    (128 descriptors of the ring here) that completed cleanly."""
    m, e, dma = rig(profile)
    if profile == "sdxi":
        dma.model = dataclasses.replace(dma.model, ring_size=128)
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=1))  # 256 folios, one batch
    dcbm = DcbmMigrator(dma, nr_dma_chan=4)
    e.registry.register(dcbm)
    e.faults["fail_dma_desc"].set(probability=100, interval=100, times=1)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert r.rc == 0 and e.faults["fail_dma_desc"].injected == 1
    assert dcbm.folios_failures == unmarked and dcbm.folios_migrated == 256 - unmarked
    assert e.statistics().fallbacks == {"EIO": unmarked}
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).all()
    report = m.check_integrity()
    assert report.ok, report


async def test_ptdma_channels_are_exclusive_and_concurrent_batches_contend(autojump_clock):
    m, e, dma = rig()
    a = m.add_tenant(TenantSpec("a", 2 * MiB, order=0))
    b = m.add_tenant(TenantSpec("b", 2 * MiB, order=0))
    dcbm = DcbmMigrator(dma, nr_dma_chan=12)
    e.registry.register(dcbm)
    peak = []

    async def watch():
        while True:
            peak.append(max(c.client_count for c in dma.channels))
            await trio.sleep(1e-6)

    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        n.start_soon(watch)
        async with trio.open_nursery() as callers:
            callers.start_soon(e.migrate_pages, m.tenant_folios(a), 1, MigrateReason.MR_DEMOTION)
            callers.start_soon(e.migrate_pages, m.tenant_folios(b), 1,
                               MigrateReason.MR_COMPACTION)
        n.cancel_scope.cancel()
    # the first batch holds 12 of the 16 PT channels; the second gets the other 4
    assert sorted(dcbm.channels_claimed) == [4, 12]
    assert max(peak) == 1 and all(c.client_count == 0 for c in dma.channels)
    assert m.check_integrity().ok


async def test_v6_channel_request_and_mapping_are_charged_to_the_cpu(autojump_clock):
    """The batch's first folio waits for the CPU's request/release of each
    channel and dma_map_sgtable() of each folio, on top of the same DMA time."""
    latency = []
    for free in (False, True):
        m, e, dma = rig()
        if free:
            dma.model = dataclasses.replace(dma.model, chan_request_us=0.0, map_folio_us=0.0)
        t = m.add_tenant(TenantSpec("t", 64 * 4096, order=0))
        e.registry.register(DcbmMigrator(dma, nr_dma_chan=8))
        records = []
        e.subscribe(records.append)
        async with trio.open_nursery() as n:
            n.start_soon(dma.run)
            await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
            n.cancel_scope.cancel()
        latency.append(float(records[0].first_folio_seconds[0]))
    model = get_profile("zen3-ptdma").dma
    charged = (8 * model.chan_request_us + 64 * model.map_folio_us) * 1e-6
    assert charged > 0 and latency[0] - latency[1] == pytest.approx(charged, rel=1e-6)
