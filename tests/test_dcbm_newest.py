"""The newest dcbm (drivers/migrate_offload/dcbm/dcbm.c after v6), beside v6.

Expectations come from the driver: ``dcbm_get_channels()`` at enable,
``dcbm_claim_channels()`` (one device group, trylock, -EBUSY when none is
free), ``dma_work_throttle()`` (``max_inflight``), ``dma_work_wait()``
(nothing terminated), the ``*_param_set()`` resets and ``nr_dma_chan_param_set()``
(-EBUSY while offloading).
"""

import errno

import numpy as np
import pytest
import trio

from migd.bench import BenchOptions, MigratorSpec, Rig
from migd.daemon import System, build_tree, load_config
from migd.dma import DmaChannel, DmaDevice
from migd.hw import VirtualClock, get_profile
from migd.migrate import MigrationEngine
from migd.mm import MigrateReason, TenantSpec
from migd.offload import DcbmMigrator
from migd.offload._dcbm_newest import NewestChannels

from .helpers import MiB, make_machine


def device(profile: str) -> DmaDevice:
    m = make_machine(True)
    e = MigrationEngine(m, VirtualClock(), get_profile(profile))
    return DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)


def test_ptdma_groups_are_one_channel_each_and_claims_trylock_them():
    """PTDMA: one memcpy channel per PT device, so 16 groups of one; each
    claim gets one channel of one group, the 17th finds none (-EBUSY)."""
    pool = NewestChannels(device("zen3-ptdma"))
    pool.get(16)
    assert [len(g.chans) for g in pool.groups] == [1] * 16
    claims = [pool.claim(16, 1) for _ in range(16)]
    assert all(c is not None and len(c[1]) == 1 for c in claims)
    assert len({c[1][0].chan_id for c in claims}) == 16
    assert pool.claim(1, 0) is None
    pool.release(claims[3][1])
    again = pool.claim(4, 0)
    assert again is not None and again[1] == claims[3][1]


def test_dsa_one_device_gives_a_batch_every_free_channel_of_it():
    pool = NewestChannels(device("dsa"))
    pool.get(8)
    assert [len(g.chans) for g in pool.groups] == [8]
    first = pool.claim(5, 0)
    assert len(first[1]) == 5
    second = pool.claim(8, 0)  # the trylock takes what is left
    assert len(second[1]) == 3
    assert pool.claim(1, 0) is None


def test_acquired_channels_are_held_until_put_and_exclusive_ones_skipped():
    dev = device("zen3-ptdma")
    dev.channels[0].client_count = 1  # another client holds dma0chan0
    pool = NewestChannels(dev)
    pool.get(4)
    assert [c.chan_id for c in pool.channels] == [1, 2, 3, 4]
    assert [c.client_count for c in dev.channels[:6]] == [1, 1, 1, 1, 1, 0]
    pool.put()
    assert [c.client_count for c in dev.channels[:6]] == [1, 0, 0, 0, 0, 0]


def rig_row(variant: str, callers: int, profile: str = "zen3-ptdma") -> dict:
    opts = BenchOptions(clock="virtual", profile=profile, total=64 * MiB, variant=variant)

    async def main():
        rig = Rig(opts, 9)
        return await rig.migrate(MigratorSpec("dcbm", 16), 262144, callers=callers)
    row = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return row.extra


def test_on_ptdma_newest_gives_one_caller_one_channel_where_v6_took_sixteen():
    """The finding the README shows: per-device groups on a one-channel-per-device
    engine; concurrent callers each get a device, where v6's first caller takes
    every channel and refuses the others."""
    assert rig_row("v6", 1)["channels_per_batch"] == 16
    assert rig_row("newest", 1)["channels_per_batch"] == 1
    v6, newest = rig_row("v6", 4), rig_row("newest", 4)
    assert v6["batches_refused"] >= 1 and newest["batches_refused"] == 0
    assert newest["channels_per_batch"] == 1


async def test_max_inflight_bounds_what_a_channel_has_queued(autojump_clock, monkeypatch):
    m = make_machine(True)
    e = MigrationEngine(m, VirtualClock(), get_profile("zen3-ptdma"))
    dma = DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=0))
    mig = DcbmMigrator(dma, 1, variant="newest")
    mig.max_inflight = 8
    e.registry.register(mig)
    e.nr_max_batched_migration = 1024
    most = [0]
    submit = DmaChannel.submit

    async def watched(self, *a):
        await submit(self, *a)
        most[0] = max(most[0], self.queued)
    monkeypatch.setattr(DmaChannel, "submit", watched)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert r.failed.size == 0 and m.check_integrity().ok
    assert 0 < most[0] <= 8  # PTDMA has no DMA_MEMCPY_SG: one folio per descriptor
    assert mig.folios_migrated == 1024 and mig.folios_failures == 0


async def test_an_error_runs_every_descriptor_out_and_falls_back_whole(autojump_clock,
                                                                      monkeypatch):
    m = make_machine(True)
    e = MigrationEngine(m, VirtualClock(), get_profile("dsa"))
    dma = DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=0))
    mig = DcbmMigrator(dma, 4, variant="newest")
    e.registry.register(mig)
    terminated = []

    async def no_terminate(self):
        terminated.append(self)
    monkeypatch.setattr(DmaChannel, "terminate_sync", no_terminate)
    e.faults["fail_dma_desc"].set(probability=100, interval=100, times=1)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert r.failed.size == 0 and m.check_integrity().ok
    assert not terminated
    assert mig.folios_failures == 512 and mig.folios_migrated == 0  # all or nothing
    assert e.statistics().fallbacks == {"EIO": 512}
    assert not any(c.busy for c in dma.channels)


CONFIG = """
[[nodes]]
name = "dram"
capacity = "16M"
demotion_target = 1
[[nodes]]
name = "far"
capacity = "16M"
[[tenants]]
name = "t"
size = "2M"
[migrator.dcbm]
nr_dma_chan = 4
[dma]
profile = "zen3-ptdma"
"""

P = "module/dcbm/parameters"


async def test_tree_offloading_acquires_channels_and_nr_dma_chan_is_ebusy_meanwhile():
    sys = System(load_config(text=CONFIG))
    tree = build_tree(sys)
    assert tree.read(f"{P}/variant") == b"newest\n"
    in_use = [f"class/dma/dma{i}chan0/in_use" for i in range(6)]
    assert [tree.read(p) for p in in_use] == [b"0\n"] * 6
    await tree.write(f"{P}/offloading", b"1\n")
    assert tree.read(f"{P}/offloading") == b"1\n"
    assert [tree.read(p) for p in in_use] == [b"1\n"] * 4 + [b"0\n"] * 2
    for path, value in ((f"{P}/nr_dma_chan", b"2"), (f"{P}/variant", b"v6")):
        with pytest.raises(OSError) as err:
            await tree.write(path, value)
        assert err.value.errno == errno.EBUSY
    assert tree.read(f"{P}/nr_dma_chan") == b"4\n"
    await tree.write(f"{P}/offloading", b"0\n")
    assert [tree.read(p) for p in in_use] == [b"0\n"] * 6
    await tree.write(f"{P}/nr_dma_chan", b"16\n")
    assert tree.read(f"{P}/nr_dma_chan") == b"16\n"


async def test_tree_counters_reset_by_any_write_and_bool_params_read_y_n():
    sys = System(load_config(text=CONFIG))
    tree = build_tree(sys)
    mig = sys.migrators["dcbm"]
    sys.dma.batches_refused = 5
    mig.folios_cleared, mig.clear_failures, mig.folios_gated = 3, 2, 1
    for name, before in (("batches_refused", 5), ("folios_cleared", 3),
                         ("clear_failures", 2), ("folios_gated", 1)):
        assert tree.read(f"{P}/{name}") == f"{before}\n".encode()
        await tree.write(f"{P}/{name}", b"whatever\n")
        assert tree.read(f"{P}/{name}") == b"0\n"
    for name in ("cpu_warm", "util_gate", "cache_ctrl"):  # module_param(bool): Y/N
        assert tree.read(f"{P}/{name}") == b"Y\n"
        await tree.write(f"{P}/{name}", b"n\n")
        assert tree.read(f"{P}/{name}") == b"N\n"
    assert tree.read(f"{P}/min_clear_bytes") == b"2097152\n"
    assert [tree.read(f"{P}/{n}") for n in ("max_inflight", "sg_elems")] == [b"32\n"] * 2
    for name in ("max_inflight", "sg_elems"):
        with pytest.raises(OSError) as err:
            await tree.write(f"{P}/{name}", b"0")
        assert err.value.errno == errno.EINVAL


def test_v6_keeps_per_batch_claims_and_its_compiled_copy():
    dma = device("native")
    assert DcbmMigrator(dma, 4).variant == "v6"
    newest = DcbmMigrator(dma, 4, variant="newest")
    assert newest.compiled_copy() is None
    with pytest.raises(OSError) as err:
        newest.set_variant("v7")
    assert err.value.errno == errno.EINVAL
    assert np.array_equal([c.client_count for c in dma.channels], [0] * 16)


def clear_rig(profile: str):
    from migd.bench._clear import _Rig  # the bench clear's rig: faults on a THP tenant

    return _Rig(BenchOptions(clock="virtual"), profile)


async def test_pool_refills_serves_trims_drains_and_gives_back(autojump_clock):
    """mm/prezero_pool.c: refill to max_per_node on a wanted node, a THP fault
    takes a parked folio (hit), lowering max_per_node trims, the shrinker gives
    PMDs back, disabling drains; every faulted page reads zero."""
    rig = clear_rig("dsa")
    mem = rig.machine.memory
    async with trio.open_nursery() as n:
        n.start_soon(rig.dma.run)
        n.start_soon(rig.pool.run)
        rig.engine.registry.register(rig.dcbm)
        rig.pool.max_per_node = 6
        await rig.pool.set_enabled(True)
        assert rig.pool.get(0) == -1 and rig.pool.misses[0] == 1  # asks for node 0
        await trio.sleep(0.1)
        assert rig.pool.node_size(0) == 6 and rig.pool.node_size(1) == 0
        free = mem.nodes[0].nr_free_pages
        faults = await rig.faults(3)
        assert [f.how for f in faults] == ["pool"] * 3 and rig.pool.hits[0] == 3
        assert rig.dcbm.folios_cleared >= 6
        assert mem.nodes[0].nr_free_pages > free - 1  # parked memory counted as used
        assert rig.machine.check_integrity().ok
        assert not mem.arena[rig.tenant.pte_pfn[:3 * 512]].any()  # really zero
        await trio.sleep(0.1)
        rig.pool.set_max_per_node(2)
        assert rig.pool.node_size(0) == 2
        assert rig.pool.shrink(0, 1) == 512 and rig.pool.node_size(0) == 1
        await rig.pool.set_enabled(False)
        assert rig.pool.size == 0
        n.cancel_scope.cancel()
    assert rig.machine.check_integrity().ok


@pytest.mark.parametrize("profile, how, errno_", [("dsa", "dma", 0),
                                                  ("zen3-ptdma", "cpu", errno.EOPNOTSUPP)])
async def test_clear_offload_or_cpu_fallback_leaves_the_folio_zero(autojump_clock, profile,
                                                                   how, errno_):
    """folio_clear_dma(): DMA_MEMSET where the engine has it, else -EOPNOTSUPP
    (clear_failures) and the CPU clears; util_gate refuses on busy CPUs."""
    rig = clear_rig(profile)
    async with trio.open_nursery() as n:
        n.start_soon(rig.dma.run)
        rig.engine.registry.register(rig.dcbm)
        faults = await rig.faults(4)
        assert [f.how for f in faults] == [how] * 4
        assert (rig.dcbm.folios_cleared, rig.dcbm.clear_failures) == (
            (4, 0) if how == "dma" else (0, 4))
        rig.dcbm.cpus_saturated = lambda: True
        assert [f.how for f in await rig.faults(2)] == ["cpu"] * 2
        assert rig.dcbm.folios_gated == 2
        n.cancel_scope.cancel()
    assert not rig.machine.memory.arena[rig.tenant.pte_pfn[:4 * 512]].any()
    assert rig.machine.check_integrity().ok


async def test_a_fault_leaves_a_pinned_region_alone(autojump_clock):
    """A pinned folio (pin_user_pages: a reference beyond its own and its
    mapping's) outlives munmap() in the kernel; migd's fault workload skips its
    region instead of freeing it under the pin (whose later unpin then dropped
    the count of a freed, maybe reallocated, folio)."""
    rig = clear_rig("dsa")
    mem, t = rig.machine.memory, rig.tenant
    head = int(t.pte_pfn[0])
    mem.refcount[head] += 1  # pinned
    async with trio.open_nursery() as n:
        n.start_soon(rig.dma.run)
        (fault,) = await rig.faults(1)
        assert fault.how == "none" and int(t.pte_pfn[0]) == head
        assert mem.refcount[head] == 1 + 1 + 1  # its own, its mapping's, the pin
        mem.refcount[head] -= 1  # unpinned: the region may be faulted again
        (fault,) = await rig.faults(1)
        assert fault.how != "none" and int(t.pte_pfn[0]) != head
        n.cancel_scope.cancel()
    assert rig.machine.check_integrity().ok


@pytest.mark.parametrize("variant,profile,max_inflight", [
    ("newest", "zen3-ptdma", 4),  # the throttle waits on the hung descriptor
    ("v6", "sdxi", None),  # a full ring (512 descriptors) waits on it
])
async def test_a_hung_descriptor_times_out_even_while_submitting(autojump_clock, variant,
                                                                 profile, max_inflight):
    """A descriptor that never completes (fail_dma_timeout) keeps the channel's
    queue full, so the rest of the batch cannot be submitted: that wait ends
    at the migrator's timeout too, the channels are terminated and the CPU
    copies the batch (ETIMEDOUT), instead of the call waiting for ever under
    migrate_pages_batch()'s shield."""
    m = make_machine(True)
    e = MigrationEngine(m, VirtualClock(), get_profile(profile))
    dma = DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=0))
    mig = DcbmMigrator(dma, 1, variant=variant)
    if max_inflight:
        mig.max_inflight = max_inflight
    e.registry.register(mig)
    e.nr_max_batched_migration = 1024
    e.faults["fail_dma_timeout"].set(probability=100, interval=1, times=1)
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        with trio.move_on_after(120) as scope:
            r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert not scope.cancelled_caught, "still waiting 120 s (virtual) after a hung descriptor"
    assert r.stats.nr_succeeded == t.nr_pages
    assert e.statistics().fallbacks.get("ETIMEDOUT", 0) > 0
    assert m.check_integrity().ok
