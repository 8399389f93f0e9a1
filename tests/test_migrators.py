"""mtcopy, dcbm and the emulated dmaengine: RFC semantics, faults, concurrency."""

import dataclasses
import errno

import numpy as np
import pytest
import trio

from migd.dma import DmaDevice
from migd.hw import Clock, VirtualClock, get_profile
from migd.migrate import BatchRecords, MigrationEngine
from migd.mm import MigrateReason, TenantSpec
from migd.offload import DcbmMigrator, MtcopyMigrator
from migd.offload._dcbm import dcbm_nr_channels
from migd.offload._mtcopy import thread_bytes

from .helpers import MiB, make_machine


def rig(virtual: bool, profile: str = "zen3-ptdma", node_mib: int = 32,
        iommu: bool | None = None):
    """``iommu=False``: the profile without its IOMMU merge model (whose uneven
    merges give some lists back to the CPU; tests/test_questions.py covers it)."""
    m = make_machine(virtual, node_mib=node_mib)
    hw = get_profile(profile)
    if iommu is not None:
        hw = dataclasses.replace(hw, dma=dataclasses.replace(hw.dma, iommu=iommu))
    e = MigrationEngine(m, VirtualClock() if virtual else Clock(), hw)
    dma = DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)
    return m, e, dma


#: dcbm's folios_copy_dma() (drivers/migrate_offload/dcbm/dcbm.c), worked by
#: hand: ``max_channels = min3(nr_dma_channels, nr_folios, MAX_DMA_CHANNELS)``,
#: channel ``i`` gets ``nr*(i+1)/c - nr*i/c`` folios (integer division), in
#: list order.  E.g. 10 on 4: 10/4=2, 20/4-2=3, 30/4-5=2, 40/4-7=3.
DCBM_SLICES = [
    (1, 8, [1]),
    (3, 16, [1, 1, 1]),  # min3: no more channels than folios
    (7, 3, [2, 2, 3]),  # 7/3=2, 14/3-2=2, 21/3-4=3
    (10, 4, [2, 3, 2, 3]),
    (17, 5, [3, 3, 4, 3, 4]),  # 3, 6-3, 10-6, 13-10, 17-13
    (63, 16, [3] + [4] * 15),  # 63/16=3, then 126/16-3=4, 189/16-7=4, ...
    (64, 16, [4] * 16),
]


@pytest.mark.parametrize(("nr_folios", "nr_dma_chan", "want"), DCBM_SLICES)
async def test_dcbm_puts_each_slice_on_its_channel(nr_folios, nr_dma_chan, want,
                                                   autojump_clock):
    """Per-channel descriptor counts of one batch, as folios_copy_dma() splits it."""
    m, e, dma = rig(True, node_mib=8, iommu=False)  # every list reaches the channels
    t = m.add_tenant(TenantSpec("t", nr_folios * 4096, order=0))
    dcbm = DcbmMigrator(dma)
    dcbm.set_nr_dma_chan(nr_dma_chan)
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 64
    assert dcbm_nr_channels(nr_dma_chan, nr_folios) == len(want)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert [c.memcpy_count for c in dma.channels] == want + [0] * (16 - len(want))
    assert dcbm.folios_migrated == nr_folios and m.check_integrity().ok


@pytest.mark.parametrize("virtual", [True, False])
async def test_completions_out_of_order_are_handled(virtual):
    m, e, dma = rig(virtual)
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=2))
    dcbm = DcbmMigrator(dma, nr_dma_chan=4)
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 512
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    order = dcbm.completion_order
    assert sorted(order) == list(range(len(order)))
    if virtual:  # deterministic there: channels finish their descriptors interleaved
        assert order != sorted(order), "four channels must complete interleaved"
    assert dcbm.folios_migrated == len(order) and dcbm.folios_failures == 0
    assert m.check_integrity().ok and (m.memory.nid_of[m.tenant_folios(t)] == 1).all()


FAULTS = [
    # fault point, dcbm's errno (fallback cause), counted as refused batch,
    # interval and times (per-descriptor points see 128 calls, busy one per batch)
    ("fail_dma_desc", "EIO", False, 7, 3),
    ("fail_dma_partial", "EIO", False, 7, 3),
    ("fail_dma_timeout", "ETIMEDOUT", False, 7, 3),
    ("fail_dma_busy", "EBUSY", True, 2, 1),
]


@pytest.mark.parametrize("virtual", [True, False])
@pytest.mark.parametrize("point, cause, refused, interval, times", FAULTS)
async def test_every_dma_fault_falls_back_and_loses_nothing(virtual, point, cause, refused,
                                                           interval, times):
    m, e, dma = rig(virtual, "dsa")  # exclusive channels whose driver reports errors
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=3))
    dcbm = DcbmMigrator(dma, nr_dma_chan=4, timeout=0.2)
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 256
    e.faults[point].set(probability=100, interval=interval, times=times)
    records: list[BatchRecords] = []
    e.subscribe(records.append)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert r.rc == 0 and r.failed.size == 0
    report = m.check_integrity()
    assert report.ok, report
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).all()
    s = e.statistics()
    fell_back = sum(int(x.nr_fallback.sum()) for x in records)
    assert fell_back > 0 and s.fallbacks == {cause: fell_back}
    offered = sum(int(x.nr_offloaded.sum()) for x in records)
    if refused:  # v6 dcbm_claim_channels(): a refused batch is not a copy failure
        assert dcbm.folios_failures == 0
        assert dcbm.folios_migrated + fell_back == offered
    else:  # v6: a failed batch counts every folio of it, all copied by the CPU
        assert dcbm.folios_migrated + dcbm.folios_failures == offered
        assert dcbm.folios_failures == fell_back
    assert (dma.batches_refused > 0) == refused
    assert e.faults[point].injected == times
    if point == "fail_dma_timeout":
        # the hung descriptor's channel was terminated and serves the next batch
        assert all(not c.busy for c in dma.channels)


async def test_declining_small_batches_falls_back_with_eopnotsupp(autojump_clock):
    m, e, dma = rig(True)
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=0))
    dcbm = DcbmMigrator(dma, nr_dma_chan=2)
    dcbm.min_batch_pages = 256
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 100
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert e.statistics().fallbacks == {"EOPNOTSUPP": 512}
    assert sum(c.memcpy_count for c in dma.channels) == 0
    assert m.check_integrity().ok


async def test_migrator_batch_size_preference_is_bounded_by_the_core(autojump_clock):
    m, e, dma = rig(True, node_mib=2048)
    t = m.add_tenant(TenantSpec("t", 1024 * MiB, order=9))
    dcbm = DcbmMigrator(dma, nr_dma_chan=16)
    e.registry.register(dcbm)
    records: list[BatchRecords] = []
    e.subscribe(records.append)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        dcbm.batch_size = 4096  # the migrator asks for 8 THPs per batch
        await e.migrate_pages(m.tenant_folios(t)[:16], 1, MigrateReason.MR_DEMOTION)
        dcbm.batch_size = 10**9  # more than the core allows: clamped to 262144 pages
        await e.migrate_pages(m.tenant_folios(t)[16:], 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    pages = [int(p) for r in records for p in r.nr_pages]
    assert pages == [4096, 4096, 262144 - 8192]
    assert m.check_integrity().ok


@pytest.mark.parametrize("threads", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("order", [0, 4, 9])
async def test_mtcopy_copies_every_byte(threads, order):
    m, e, _ = rig(False)
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=order))
    e.registry.register(MtcopyMigrator(threads))
    e.faults["fail_migrate_alloc"].set(probability=100, interval=10**9, times=-1)  # general path
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_SYSCALL)
    e.faults["fail_migrate_alloc"].set(probability=0)
    await e.migrate_pages(m.tenant_folios(t), 0, MigrateReason.MR_SYSCALL)  # fast path
    assert m.check_integrity().ok
    assert (m.memory.nid_of[m.tenant_folios(t)] == 0).all()


#: copy_page_lists_mt() (Zi Yan), worked by hand: with nr_items >= threads,
#: thread ``cpu`` gets ``nr_items / T + (cpu < nr_items % T)`` folios, in list
#: order; fewer folios than threads: each folio cut into T chunks of size / T.
MT_SPLIT_TABLE = [
    # (folio orders, threads, bytes per thread)
    ([0] * 10, 4, [3 * 4096, 3 * 4096, 2 * 4096, 2 * 4096]),
    ([0] * 7, 3, [3 * 4096, 2 * 4096, 2 * 4096]),
    ([9, 0, 0, 4, 0], 2, [(512 + 1 + 1) * 4096, (16 + 1) * 4096]),
    ([0, 9, 9], 2, [(1 + 512) * 4096, 512 * 4096]),
    ([9, 9], 4, [1 << 20] * 4),  # 2 folios < 4 threads: 4 chunks of 512 KiB each
    ([2], 2, [8192, 8192]),
]


@pytest.mark.parametrize("orders, threads, want", MT_SPLIT_TABLE)
def test_mtcopy_split_follows_copy_page_lists_mt(orders, threads, want):
    assert thread_bytes(np.array(orders, dtype=np.int8), threads).tolist() == want


def test_mtcopy_threads_bound():
    with pytest.raises(OSError) as e:
        MtcopyMigrator(65)
    assert e.value.errno == errno.EINVAL


async def test_switching_migrators_under_load_loses_nothing():
    """Real clock: migrations run continuously while migrators are registered,
    switched and unregistered under them; every page verifies afterwards."""
    m, e, dma = rig(False, profile="native", node_mib=64)
    tenants = [m.add_tenant(TenantSpec(f"t{o}", 8 * MiB, order=o, access_rate=20000))
               for o in (0, 4, 9)]
    e.nr_max_batched_migration = 256
    migrators = [DcbmMigrator(dma, nr_dma_chan=4), MtcopyMigrator(2), None,
                 DcbmMigrator(dma, nr_dma_chan=16)]
    stop = trio.Event()

    async def migrate_forever():
        rnd = 0
        while not stop.is_set():
            for t in tenants:
                folios = m.tenant_folios(t)
                await e.migrate_pages(folios, 1 - int(m.memory.nid_of[folios[0]]),
                                      MigrateReason.MR_SYSCALL)
            rnd += 1

    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        for i, t in enumerate(tenants):
            n.start_soon(m.run_mutator, t, i, 0.001)
        n.start_soon(migrate_forever)
        for k in range(12):
            mig = migrators[k % len(migrators)]
            if mig is not None:
                e.registry.register(mig)
            await trio.sleep(0.01)
            if mig is not None:
                await e.registry.unregister(mig)  # waits for its in-flight batch
                assert e.registry.in_flight(mig) == 0
        stop.set()
        await trio.sleep(0.05)
        n.cancel_scope.cancel()
    assert sum(t.statistics().corrupt_reads for t in tenants) == 0
    report = m.check_integrity(migrating=True)
    assert report.ok, report
    batches = e.statistics().batches
    assert {"dcbm", "mtcopy", "none"} <= batches.keys()


async def test_sdxi_ring_chunks_large_batches(autojump_clock):
    """One channel with a 512-descriptor ring: a 2048-folio batch is fed in
    chunks as descriptors complete; never more than the ring is queued."""
    m, e, dma = rig(True, profile="sdxi", node_mib=32)
    t = m.add_tenant(TenantSpec("t", 8 * MiB, order=0))
    dcbm = DcbmMigrator(dma, nr_dma_chan=16)  # sdxi has one channel
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 2048
    (chan,) = dma.channels
    peak = 0
    orig = chan.submit

    async def watched(*args):
        nonlocal peak
        await orig(*args)
        peak = max(peak, chan.queued)

    chan.submit = watched
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert chan.memcpy_count == 2048 and peak <= 512
    assert dcbm.folios_migrated == 2048 and m.check_integrity().ok


async def test_dsa_refuses_a_batch_when_every_channel_is_claimed(autojump_clock):
    """Exclusive channels: a second concurrent batch finds none free (-EBUSY),
    counted in batches_refused, and falls back to the CPU."""
    m, e, dma = rig(True, profile="dsa", node_mib=64)
    a = m.add_tenant(TenantSpec("a", 16 * MiB, order=4))
    b = m.add_tenant(TenantSpec("b", 16 * MiB, order=4))
    dcbm = DcbmMigrator(dma, nr_dma_chan=16)  # claims all 8 DSA work queues
    e.registry.register(dcbm)
    e.nr_max_batched_migration = 4096
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        async with trio.open_nursery() as callers:
            callers.start_soon(e.migrate_pages, m.tenant_folios(a), 1,
                               MigrateReason.MR_DEMOTION)
            callers.start_soon(e.migrate_pages, m.tenant_folios(b), 1,
                               MigrateReason.MR_COMPACTION)
        n.cancel_scope.cancel()
    assert dma.batches_refused >= 1
    assert e.statistics().fallbacks.get("EBUSY", 0) > 0
    assert all(not c.in_use for c in dma.channels)  # released after every batch
    assert m.check_integrity().ok
    assert (m.memory.nid_of[m.tenant_folios(a)] == 1).all()
    assert (m.memory.nid_of[m.tenant_folios(b)] == 1).all()


@pytest.mark.parametrize("virtual", [True, False])
async def test_stop_during_a_hung_dma_batch_finishes_it_on_the_cpu(virtual):
    """Shutdown while a batch waits on a descriptor that never completes: the
    copy is cancelled at once (not after the 10 s timeout), the batch finishes
    on the CPU, later batches are not started, nothing is left unmapped."""
    m, e, dma = rig(virtual)
    t = m.add_tenant(TenantSpec("t", 8 * MiB, order=0))
    e.registry.register(DcbmMigrator(dma, nr_dma_chan=4))
    e.nr_max_batched_migration = 256
    e.faults["fail_dma_timeout"].set(probability=100, times=1)
    folios = m.tenant_folios(t)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        result = []

        async def migrate():
            result.append(await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION))
        n.start_soon(migrate)
        while not e.faults["fail_dma_timeout"].injected:
            await trio.sleep(0.001)
        e.stop()
        while not result:
            await trio.sleep(0.001)
        n.cancel_scope.cancel()
    r = result[0]
    assert 0 < r.failed.size < folios.size  # the first batch moved, the rest never tried
    # cut short by the stop (EINTR), not by dcbm's 10 s timeout (ETIMEDOUT)
    fallbacks = e.statistics().fallbacks  # the folios the DMA had not copied
    assert fallbacks.keys() == {"EINTR"} and 0 < fallbacks["EINTR"] <= 256
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).sum() == 256
    assert m.check_integrity().ok
    v = e.statistics().vmstat
    assert v["pgmigrate_success"] == 256 and v["pgmigrate_fail"] == folios.size - 256
    assert e.pages_in_flight == 0 and e.pages_attempted == folios.size


async def test_cancelling_a_caller_mid_batch_leaves_no_batch_half_done(autojump_clock):
    """A cancelled migrate_pages() returns at the next batch boundary: the batch
    in flight completes (shielded), later folios fail at their source."""
    m, e, dma = rig(True)
    t = m.add_tenant(TenantSpec("t", 8 * MiB, order=2))
    e.registry.register(DcbmMigrator(dma, nr_dma_chan=2))
    e.nr_max_batched_migration = 128
    folios = m.tenant_folios(t)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        with trio.move_on_after(0.0003) as scope:  # inside the first DMA batch
            await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert scope.cancelled_caught
    moved = int((m.memory.nid_of[m.tenant_folios(t)] == 1).sum())
    assert 0 < moved < folios.size and (moved * 4) % 128 == 0  # whole batches
    report = m.check_integrity()
    assert report.ok, report
    v = e.statistics().vmstat
    assert v["pgmigrate_success"] + v["pgmigrate_fail"] == e.pages_attempted == folios.size * 4
    assert e.pages_in_flight == 0
