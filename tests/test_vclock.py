"""The virtual clock's closed form against its step-by-step path.

A clean batch with nothing to interleave runs in closed form (``migrate._vclock``,
``offload._dcbm_vclock``); the same run with ``engine.paths`` narrowed to
``Path.GENERAL`` runs every batch step by step.  The expectations are the
step-by-step path's own output, so the tests hold whatever the profile's
parameters are.
"""

import dataclasses

import numpy as np
import pytest
import trio

from migd.bench import BenchOptions, BenchReport, MigratorSpec, Rig
from migd.dma import DmaDevice
from migd.hw import VirtualClock, get_profile, mock_clock
from migd.migrate import ALL_PATHS, MigrationEngine, Path
from migd.mm import MigrateMode, MigrateReason, TenantSpec
from migd.offload import DcbmMigrator, MtcopyMigrator

from .helpers import MiB, make_machine

#: Times are sums of the same modelled costs in another grouping: equal to rounding.
ATOL = 1e-12


def _same(a, b, where="") -> None:
    """Equal, floats to ATOL (recursing through dataclasses, dicts, sequences, arrays)."""
    if dataclasses.is_dataclass(a):
        _same(dataclasses.asdict(a), dataclasses.asdict(b), where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape, where
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL, err_msg=where)
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=0, abs=ATOL), where
    else:
        assert a == b, where


def _run(closed: bool, order: int, migrator: str, bound: int, *, sync: bool = True,
         profile: str = "zen3-ptdma", budget_us: int = 0, mutator: bool = False) -> dict:
    """Move a 4 MiB tenant of ``order`` folios to node 1; everything observable.
    ``mutator``: the tenant touches 100 random pages every 50 us meanwhile."""
    async def main() -> dict:
        machine = make_machine(True, node_mib=8)
        tenant = machine.add_tenant(TenantSpec("t", 4 * MiB, order=order,
                                               access_rate=2e6 if mutator else 0.0))
        clock, hw = VirtualClock(), get_profile(profile)
        engine = MigrationEngine(machine, clock, hw)
        engine.paths = ALL_PATHS if closed else frozenset({Path.GENERAL})
        engine.nr_max_batched_migration = bound
        engine.max_inaccessible_us = budget_us
        dma = DmaDevice(0, machine.memory, clock, hw.dma, engine.faults)
        name, _, param = migrator.partition(":")
        mig = {"mtcopy": lambda: MtcopyMigrator(int(param)),
               "dcbm": lambda: DcbmMigrator(dma, int(param))}.get(name, lambda: None)()
        if mig is not None:
            engine.registry.register(mig)
        records = []
        engine.subscribe(records.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            nursery.start_soon(machine.run_mutator, tenant, 3, 50e-6)
            step = 1 << order
            touched = []

            async def first_folios():  # each batch's first folio, one every 20 us
                heads = np.arange(0, tenant.nr_pages, max(bound, step))
                for k in range(10_000 if mutator else 0):
                    await trio.sleep(20e-6)
                    await machine.access(tenant, heads[k % heads.size:][:1], np.zeros(1, bool))
                    touched.append(trio.current_time())
            nursery.start_soon(first_folios)
            if sync:
                result = await engine.move_pages(tenant, np.arange(0, tenant.nr_pages, step), 1)
            else:
                result = await engine.migrate_pages(
                    machine.tenant_folios(tenant), 1, MigrateReason.MR_DEMOTION,
                    MigrateMode.MIGRATE_ASYNC)
            end = trio.current_time()
            nursery.cancel_scope.cancel()
        assert machine.check_integrity().ok
        out = {
            "result": (result.rc, result.stats, result.failed), "end": end,
            "statistics": engine.statistics(), "pte_pfn": tenant.pte_pfn.copy(),
            "tenant": tenant.statistics(), "touched": touched,
            "records": [dataclasses.astuple(r) for r in records],
            "channels": [dataclasses.astuple(c.statistics()) for c in dma.channels],
            "paths": (engine.closed_form_batches,
                      getattr(mig, "closed_form_batches", None),
                      sum(int(r.nr_folios.size) for r in records)),
        }
        if isinstance(mig, DcbmMigrator):
            out["dcbm"] = (mig.folios_migrated, mig.folios_failures, mig.channels_claimed,
                           mig.completion_order)
        return out
    return trio.run(main, clock=mock_clock())


@pytest.mark.parametrize(("order", "migrator", "bound", "sync", "profile", "budget_us"), [
    (0, "none", 512, True, "zen3-ptdma", 0),
    (0, "dcbm:16", 512, True, "zen3-ptdma", 0),
    (0, "dcbm:3", 300, False, "zen3-ptdma", 0),  # uneven slices, the bound crossed
    (0, "mtcopy:4", 256, True, "zen3-ptdma", 0),
    (4, "dcbm:8", 256, True, "zen3-ptdma", 0),
    (9, "dcbm:2", 512, False, "zen3-ptdma", 0),
    (9, "none", 512, True, "zen3-ptdma", 0),
    (2, "dcbm:1", 512, True, "sdxi", 0),  # one channel with a ring, marked by chunks
    (0, "dcbm:4", 512, True, "zen3-ptdma", 150),  # the latency budget sizes the batches
])
@pytest.mark.parametrize("mutator", [False, True])
def test_closed_form_equals_step_by_step_for_clean_batches(order, migrator, bound, sync,
                                                          profile, budget_us, mutator):
    """With a mutator, whose accesses stall on migration entries, the batch copies
    and move loops its ticks fall in run step by step, and its stalls are the same."""
    kw = dict(sync=sync, profile=profile, budget_us=budget_us, mutator=mutator)
    closed, steps = _run(True, order, migrator, bound, **kw), _run(False, order, migrator,
                                                                  bound, **kw)
    # which path ran: every batch closed (dcbm's copies too), none in the reference
    engine_cf, dcbm_cf, nr_batches = closed["paths"]
    assert nr_batches > 1 and engine_cf == nr_batches
    assert dcbm_cf is None or dcbm_cf == nr_batches or mutator and dcbm_cf < nr_batches
    if mutator:
        assert closed["tenant"].stalls > 0
    assert steps["paths"][:2] == (0, 0 if dcbm_cf is not None else None)
    del closed["paths"], steps["paths"]
    _same(closed, steps)


def test_step_by_step_runs_while_a_fault_is_armed():
    """Every channel request refused (fail_dma_busy, 100%, unlimited): the fault can
    fire at any batch, so none runs in closed form; disarmed, they do again."""
    async def main():
        machine = make_machine(True, node_mib=8)
        tenant = machine.add_tenant(TenantSpec("t", 2 * MiB, order=0))
        clock, hw = VirtualClock(), get_profile("zen3-ptdma")
        engine = MigrationEngine(machine, clock, hw)
        dma = DmaDevice(0, machine.memory, clock, hw.dma, engine.faults)
        mig = DcbmMigrator(dma, 4)
        engine.registry.register(mig)
        engine.nr_max_batched_migration = 128  # 4 batches
        engine.faults["fail_dma_busy"].set(probability=100, times=-1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            r = await engine.move_pages(tenant, np.arange(tenant.nr_pages), 1)
            assert r.failed.size == 0 and dma.batches_refused == 4
            assert (engine.closed_form_batches, mig.closed_form_batches) == (0, 0)
            engine.faults["fail_dma_busy"].set(probability=0)
            await engine.move_pages(tenant, np.arange(tenant.nr_pages), 0)
            assert (engine.closed_form_batches, mig.closed_form_batches) == (4, 4)
            nursery.cancel_scope.cancel()
    trio.run(main, clock=mock_clock())


def test_step_by_step_runs_while_another_caller_is_in_flight():
    """A long caller and a short one that starts after it and ends before it: no
    batch that starts while both are in flight runs in closed form."""
    async def main():
        machine = make_machine(True, node_mib=16)
        big = machine.add_tenant(TenantSpec("big", 8 * MiB, order=0))
        small = machine.add_tenant(TenantSpec("small", 1 * MiB, order=0))
        clock, hw = VirtualClock(), get_profile("zen3-ptdma")
        engine = MigrationEngine(machine, clock, hw)
        dma = DmaDevice(0, machine.memory, clock, hw.dma, engine.faults)
        mig = DcbmMigrator(dma, 8)
        engine.registry.register(mig)
        engine.nr_max_batched_migration = 128  # 16 batches for the long call, 2 short
        seen = {}

        def on_call(call):  # the closed-form count when the short call starts and ends
            if engine.calls_in_flight == 1:  # (the long one is in flight, not counted)
                seen[call.end] = engine.closed_form_batches
        engine.subscribe_calls(on_call)

        async def short():
            await trio.sleep(300e-6)  # the long call is in its batches by then
            await engine.move_pages(small, np.arange(small.nr_pages), 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            nursery.start_soon(short)
            await engine.move_pages(big, np.arange(big.nr_pages), 1)
            nursery.cancel_scope.cancel()
        assert machine.check_integrity().ok
        assert set(seen) == {False, True}
        assert seen[True] == seen[False]  # none while both were in flight
        assert 0 < engine.closed_form_batches < 16 + 2  # the long call's others were
    trio.run(main, clock=mock_clock())


def _two_callers(closed: bool, offset: float | None) -> dict:
    """A long dcbm:8 caller, and a short one waking ``offset`` seconds in (None:
    no short caller)."""
    async def main() -> dict:
        machine = make_machine(True, node_mib=16)
        big = machine.add_tenant(TenantSpec("big", 4 * MiB, order=0))
        small = machine.add_tenant(TenantSpec("small", 256 << 10, order=0))
        clock, hw = VirtualClock(), get_profile("zen3-ptdma")
        engine = MigrationEngine(machine, clock, hw)
        engine.paths = ALL_PATHS if closed else frozenset({Path.GENERAL})
        engine.nr_max_batched_migration = 256
        dma = DmaDevice(0, machine.memory, clock, hw.dma, engine.faults)
        mig = DcbmMigrator(dma, 8)
        engine.registry.register(mig)
        records = []
        engine.subscribe(records.append)

        async def short():
            await trio.sleep(offset)
            await engine.move_pages(small, np.arange(small.nr_pages), 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            if offset is not None:
                nursery.start_soon(short)
            await engine.move_pages(big, np.arange(big.nr_pages), 1)
            nursery.cancel_scope.cancel()
        return {"records": [dataclasses.astuple(r) for r in records],
                "statistics": engine.statistics(),
                "channels": [dataclasses.astuple(c.statistics()) for c in dma.channels],
                "claimed": mig.channels_claimed, "refused": dma.batches_refused,
                "paths": (engine.closed_form_batches, mig.closed_form_batches),
                "first_batch": (float(records[0].start[0]),
                                float(records[0].first_folio_seconds[0]))}
    return trio.run(main, clock=mock_clock())


def test_a_caller_waking_mid_copy_meets_the_channels_the_step_path_gives():
    """A second caller wakes at eight points of the first one's first batch, up to
    its first folio: when it wakes during the batch copy, that copy runs step by
    step (a task's sleep ends before it would), and in every case the two
    callers' records, the channels' statistics and claims are the all-step-by-step
    run's.  The points come from the run itself, not from the profile's values."""
    start, first = _two_callers(True, None)["first_batch"]
    declined = []
    for k in range(8):
        offset = start + first * (k + 0.5) / 8
        closed, steps = _two_callers(True, offset), _two_callers(False, offset)
        engine_cf, dcbm_cf = closed.pop("paths")
        assert steps.pop("paths") == (0, 0)
        assert engine_cf > 0
        declined.append(engine_cf - dcbm_cf)  # copies run step by step in closed batches
        _same(closed, steps, f"offset {offset}")
    assert max(declined) > 0


def test_virtual_bench_rows_report_the_simulators_speed():
    """wall_seconds and sim_speed in a virtual row's JSON and in the table; not on
    the real clock, where simulated and wall time are one."""
    async def main(clock: str):
        rig = Rig(BenchOptions(clock=clock, total=4 * MiB), order=0)
        return await rig.migrate(MigratorSpec("dcbm", 4), 512)
    row = trio.run(main, "virtual", clock=mock_clock())
    js = row.as_json()
    assert js["wall_seconds"] > 0
    assert js["sim_speed"] == pytest.approx(js["seconds"] / js["wall_seconds"])
    table = BenchReport("throughput", "virtual", "zen3-ptdma", [row]).table()
    head = table.splitlines()[1]
    assert head.endswith("wall seconds  sim speed")
    wall, speed = (float(x) for x in table.splitlines()[2].split()[-2:])
    assert (wall, speed) == (pytest.approx(js["wall_seconds"], abs=1e-3),
                             pytest.approx(js["sim_speed"], rel=1e-2, abs=1e-3))
    assert "# simulator: " in table and "over 1 rows" in table
    real = trio.run(main, "real").as_json()
    assert "sim_speed" not in real and "wall_seconds" not in real
