"""One engine, two clocks: the same migration gives the same counters."""

import numpy as np
import pytest
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


def _timeline(spend_with_clock: bool, seed: int) -> dict:
    """Six tasks, each sleeping random modelled costs through the virtual
    clock's spend() or plain trio.sleep(); each wake-up's virtual time."""
    from migd.hw import VirtualClock

    rng = np.random.default_rng(seed)
    costs = {t: rng.uniform(1e-6, 1e-3, 40).tolist() for t in range(6)}
    clock = VirtualClock()
    seen: dict = {}

    async def task(t: int) -> None:
        seen[(t, -1)] = trio.current_time()  # tasks started together run before any jump
        for i, c in enumerate(costs[t]):
            await (clock.spend(c) if spend_with_clock else trio.sleep(c))
            seen[(t, i)] = trio.current_time()

    async def main():
        async with trio.open_nursery() as n:
            for t in range(6):
                n.start_soon(task, t)
            await clock.spend(0.5)  # alone once the others are done
        seen["end"] = trio.current_time()
    trio.run(main, clock=mock_clock())
    return seen


def test_virtual_spend_wakes_every_task_at_the_times_sleeps_do():
    """A lone task jumps the clock itself instead of sleeping; tasks that
    could run before its sleep ends (queued, or still to run in the loop's
    current batch) keep it a real sleep: every wake-up at the same time."""
    for seed in range(3):
        assert _timeline(True, seed) == _timeline(False, seed)


class _LoopPasses(trio.abc.Instrument):
    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


def test_a_lone_task_spends_without_a_run_loop_pass_and_is_still_cancellable():
    from migd.hw import VirtualClock

    clock = VirtualClock()
    loop = _LoopPasses()

    async def main():
        t0 = trio.current_time()
        for _ in range(200):
            await clock.spend(1e-6)
        assert trio.current_time() - t0 == pytest.approx(200e-6)
        passes = loop.passes
        with trio.CancelScope() as scope:
            scope.cancel()
            await clock.spend(1.0)  # raises Cancelled, as trio.sleep does
        assert scope.cancelled_caught
        return passes
    assert trio.run(main, clock=mock_clock(), instruments=[loop]) < 100
