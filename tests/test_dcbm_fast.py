"""dcbm from the engine's compiled fast path (``offload._dcbm_fast``, ``dma._chanctl``).

The expectations come from the general path (dcbm's ``migrate_offc()`` through
the channels' trio tasks, RFC v6 ``folios_copy_dma()``), never from the fast
path's own arithmetic: both run the same lists and must leave the same books.
"""

import threading

import numpy as np
import pytest
import trio

from migd.dma import DmaDevice, folios_copy_dma
from migd.dma._chanctl import COMPLETED_COOKIE, COOKIE, STARTED, new_ctl
from migd.dma._thread import CopyThread
from migd.hw import Clock, get_profile
from migd.migrate import MigrationEngine
from migd.mm import MigrateReason, TenantSpec
from migd.mm._page import FOLIO_CONTENT_COPIED
from migd.offload import DcbmMigrator

from .helpers import MiB, make_machine


def native_rig(node_mib: int = 32):
    m = make_machine(False, node_mib=node_mib)
    e = MigrationEngine(m, Clock(), get_profile("native"))
    dma = DmaDevice(0, m.memory, e.clock, e.profile.dma, e.faults)
    return m, e, dma


async def run_both_ways(order: int, batch: int, nr_dma_chan: int):
    """The same migration through the fast path and (a fault armed that never
    fires: the fast path steps aside) through the general path."""
    out = []
    for general in (False, True):
        m, e, dma = native_rig(node_mib=64)
        t = m.add_tenant(TenantSpec("t", 32 * MiB, order=order))
        dcbm = DcbmMigrator(dma, nr_dma_chan=nr_dma_chan)
        e.registry.register(dcbm)
        e.nr_max_batched_migration = batch
        if general:
            e.faults["fail_migrate_alloc"].set(probability=100, interval=10**9, times=-1)
        pinned = m.tenant_folios(t)[[3]]
        m.memory.refcount[pinned] += 1  # one folio fails: the batch is not clean
        records = []
        e.subscribe(records.extend)
        async with trio.open_nursery() as n:
            n.start_soon(dma.run)
            r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
            n.cancel_scope.cancel()
        assert m.check_integrity().ok
        s = e.statistics()
        out.append(dict(
            rc=r.rc, vmstat=s.vmstat, migrated=s.folios_migrated, failed=s.folios_failed,
            records=[(x.nr_folios, x.nr_pages, x.nr_failed, x.nr_offloaded, x.nr_fallback)
                     for x in records],
            nid=m.memory.nid_of[m.tenant_folios(t)].tolist(),
            descs=[c.memcpy_count for c in dma.channels],
            bytes=[c.bytes_transferred for c in dma.channels],
            clients=[c.client_count for c in dma.channels],
            dcbm=(dcbm.folios_migrated, dcbm.folios_failures, dcbm.channels_claimed),
            order=dcbm.completion_order,
            ring=sum(c.ring.tail for c in dma.channels)))
    return out


@pytest.mark.parametrize(("order", "batch", "nr_dma_chan"),
                         [(9, 512, 1), (9, 2048, 2), (0, 512, 1), (0, 512, 4), (2, 100, 16)])
async def test_fast_path_dcbm_leaves_the_general_paths_books(order, batch, nr_dma_chan):
    fast, general = await run_both_ways(order, batch, nr_dma_chan)
    # only the batch holding the pinned folio goes through the channels' trio tasks
    assert fast["ring"] < general["ring"] / 4, "the clean batches must take the fast path"
    one_channel_order = nr_dma_chan == 1 or fast["order"] == sorted(fast["order"])
    for key in ("rc", "vmstat", "migrated", "failed", "records", "nid", "descs", "bytes",
                "clients", "dcbm"):
        assert fast[key] == general[key], key
    assert sorted(fast["order"]) == sorted(general["order"])
    if one_channel_order:
        assert fast["order"] == list(range(len(fast["order"])))
    assert fast["clients"] == [0] * len(fast["clients"])


async def test_the_channel_thread_copies_not_the_caller():
    """The fast path hands the bytes to the channel's own thread, as hardware
    would take them: that thread's CPU time grows by at least the copy's."""
    m, e, dma = native_rig(node_mib=160)
    t = m.add_tenant(TenantSpec("t", 128 * MiB, order=9))
    e.registry.register(DcbmMigrator(dma, nr_dma_chan=1))
    e.nr_max_batched_migration = 512
    chan = dma.channels[0]
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await trio.sleep(0.01)
        assert chan.prepare_compiled_posts()  # starts the thread
        tid = chan._thread._thread.native_id

        def runtime_ns() -> int:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                return int(f.read().split()[0])

        before = runtime_ns()
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        ran = runtime_ns() - before
        n.cancel_scope.cancel()
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).all()
    assert m.check_integrity().ok
    assert chan.memcpy_count == 64 and chan.ring.tail == 0  # all 64 THPs, none via trio
    # 128 MiB takes > 4 ms at any memcpy speed this side of 30 GB/s: the
    # channel's thread did it (a caller copying would leave it asleep)
    assert ran > 4e6, ran


def test_a_timed_out_slice_is_never_copied_later():
    """``wait_for_completion_timeout()`` expiring before the channel started the
    slice: nothing is marked, and a channel thread that comes later skips it
    (``dmaengine_terminate_sync()``: no write after the CPU's fallback)."""
    m = make_machine(False, node_mib=8)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    mem = m.memory
    src = m.tenant_folios(t)[:4].copy()
    dst = mem.folio_alloc(1, 0, 4)
    before = mem.arena[dst].copy()
    ctl = new_ctl(1)  # no thread serves it yet
    stats = np.zeros((1, 4), dtype=np.int64)
    rc = folios_copy_dma(mem.arena_base, mem.page_bytes, mem.mem_map, dst, src, 0, 4, ctl,
                         stats, 2_000_000, 2, 0)
    assert rc == -1
    assert not (mem.flags[src] & FOLIO_CONTENT_COPIED).any()
    assert ctl[0, STARTED] == ctl[0, COOKIE] == 1
    th = CopyThread("late", ctl[0])
    th.start()
    for _ in range(10_000):  # (the first run of the thread's loop may compile it)
        if ctl[0, COMPLETED_COOKIE] == 1:
            break
        threading.Event().wait(0.001)
    th.stop()
    assert ctl[0, COMPLETED_COOKIE] == 1, "the late thread answers the request"
    assert (mem.arena[dst] == before).all(), "but never copies it"
    assert not (mem.arena[src] == before).all()  # (a copy would have shown)
    assert stats[0, 0] == 0


async def test_a_subclass_with_its_own_copy_never_takes_the_compiled_one():
    """The compiled copy is dcbm's own: a migrator that overrides
    ``migrate_offc()`` (the soak's planted copy bug) keeps its copy."""
    calls = []

    class Counting(DcbmMigrator):
        async def migrate_offc(self, batch) -> int:
            calls.append(batch.nr_folios)
            return await super().migrate_offc(batch)

    m, e, dma = native_rig()
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=9))
    e.registry.register(Counting(dma))
    async with trio.open_nursery() as n:
        n.start_soon(dma.run)
        await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        n.cancel_scope.cancel()
    assert calls == [1, 1]
    assert m.check_integrity().ok


def test_after_a_timeout_the_channels_that_finished_are_booked():
    """Channel 0 never answers, channel 1 does: the batch fails (nothing
    marked), yet channel 1's descriptors and bytes count, as the general
    path counts every descriptor a channel completed."""
    m = make_machine(False, node_mib=8)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    mem = m.memory
    src = m.tenant_folios(t)[:6].copy()
    dst = mem.folio_alloc(1, 0, 6)
    ctl = new_ctl(2)
    th = CopyThread("served", ctl[1])
    th.start()
    stats = np.zeros((2, 4), dtype=np.int64)
    try:
        rc = folios_copy_dma(mem.arena_base, mem.page_bytes, mem.mem_map, dst, src, 0, 6,
                             ctl, stats, 50_000_000, 2, 0)
    finally:
        th.stop()
    assert rc == -2
    assert not (mem.flags[src] & FOLIO_CONTENT_COPIED).any()
    assert stats[0, :2].tolist() == [0, 0]
    assert stats[1, :2].tolist() == [3, 3 * 4096]
