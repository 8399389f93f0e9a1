"""Tenants touching folios under migration wait on the migration entry."""

import numpy as np
import trio

from migd.mm import MigrateReason, TenantSpec

from .helpers import Gate, MiB, make_engine, make_machine


async def test_access_under_migration_waits_and_reads_new_content():
    m = make_machine(False)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=2))
    e = make_engine(m, False)
    gate = Gate()
    e.registry.register(gate)
    vpages = np.arange(0, t.nr_pages, 7)
    write = np.zeros(vpages.size, dtype=bool)
    write[::3] = True
    async with trio.open_nursery() as n:
        n.start_soon(e.migrate_pages, m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        await gate.entered.wait()
        assert t.migration_entry.all()
        started, done = trio.Event(), trio.Event()

        async def touch():
            started.set()  # access() then runs until it waits on the migration entry
            await m.access(t, vpages, write)
            done.set()
        n.start_soon(touch)
        await started.wait()  # touch is waiting by now: the stall began before this
        await trio.sleep(0.02)
        assert not done.is_set(), "an access to an unmapped folio must wait"
        gate.release.set()
        await done.wait()
    s = t.statistics()
    assert s.stalls == vpages.size
    assert s.stall_seconds >= 0.02 and s.max_stall_seconds >= 0.02
    assert s.corrupt_reads == 0
    assert (m.memory.nid_of[t.pte_pfn[vpages]] == 1).all()  # touched after remap
    assert m.check_integrity().ok


async def test_mutators_run_during_heavy_migration_without_corruption():
    m = make_machine(False, node_mib=64)
    ts = [m.add_tenant(TenantSpec(f"t{o}", 8 * MiB, order=o, access_rate=20000))
          for o in (0, 3, 9)]
    e = make_engine(m, False)
    async with trio.open_nursery() as n:
        for i, t in enumerate(ts):
            n.start_soon(m.run_mutator, t, i, 0.001)
        for rnd in range(6):
            for t in ts:
                await e.migrate_pages(m.tenant_folios(t), (rnd + 1) % 2,
                                      MigrateReason.MR_SYSCALL)
                await trio.sleep(0.002)
        n.cancel_scope.cancel()
    assert sum(t.statistics().reads for t in ts) > 0
    assert sum(t.statistics().corrupt_reads for t in ts) == 0
    assert m.check_integrity().ok
