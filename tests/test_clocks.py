"""One engine, two clocks: the same migration gives the same counters."""

import numpy as np
import trio

from migd.hw import mock_clock
from migd.mm import MigrateMode, MigrateReason, TenantSpec

from .helpers import MiB, make_engine, make_machine


def _scenario(virtual: bool):
    async def main():
        m = make_machine(virtual, node_mib=16)
        e = make_engine(m, virtual)
        a = m.add_tenant(TenantSpec("a", 2 * MiB, order=0))
        b = m.add_tenant(TenantSpec("b", 4 * MiB, order=9))
        c = m.add_tenant(TenantSpec("c", 2 * MiB, order=3, movable_ops=True))
        m.memory.refcount[m.tenant_folios(a)[[1, 9]]] += 1
        e.nr_max_batched_migration = 256
        await e.move_pages(a, np.arange(a.nr_pages), 1)
        e.faults["fail_migrate_alloc"].set(probability=100, interval=2, times=1)
        await e.migrate_pages(m.tenant_folios(b), 1, MigrateReason.MR_DEMOTION)
        await e.migrate_pages(m.tenant_folios(c), 1, MigrateReason.MR_COMPACTION,
                              MigrateMode.MIGRATE_SYNC)
        assert m.check_integrity().ok
        s = e.statistics()
        return (s.vmstat, s.vmstat_by_reason, s.folios_migrated, s.folios_failed, s.batches,
                s.batch_pages.counts, [n.nr_free_pages for n in m.memory.nodes])
    if virtual:
        return trio.run(main, clock=mock_clock())
    return trio.run(main)


def test_real_and_virtual_clock_give_identical_counters():
    real, virtual = _scenario(False), _scenario(True)
    assert real == virtual
    assert real[0]["pgmigrate_fail"] > 0 and real[0]["thp_migration_split"] > 0
