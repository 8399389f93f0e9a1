"""migrate_pages() semantics: batches, passes, -ENOMEM split, -EAGAIN, fallback, counters."""

import errno

import numpy as np
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from migd.hw import mock_clock
from migd.migrate import BatchRecord
from migd.mm import MigrateMode, MigrateReason, TenantSpec
from migd.offload import CopyBatch, Migrator

from .helpers import MiB, make_engine, make_machine

REASONS = list(MigrateReason)

op = st.fixed_dictionaries({
    "tenant": st.integers(0, 2),
    "fraction": st.sampled_from([0.1, 0.5, 1.0]),
    "reason": st.sampled_from(REASONS),
    "mode": st.sampled_from(list(MigrateMode)),
    "alloc_fail": st.sampled_from([0, 0, 20, 100]),
    "pins": st.integers(0, 3),
    "batch": st.sampled_from([1, 16, 512, 4096]),
    "seed": st.integers(0, 2**16),
})


def _run_ops(ops, virtual: bool):
    async def main():
        m = make_machine(virtual, node_mib=16)
        tenants = [m.add_tenant(TenantSpec(f"t{o}", 4 * MiB, order=o, home_node=i % 2))
                   for i, o in enumerate((0, 4, 9))]
        e = make_engine(m, virtual)
        e.faults["fail_migrate_alloc"].seed(7)
        for o in ops:
            t = tenants[o["tenant"]]
            rng = np.random.default_rng(o["seed"])
            folios = m.tenant_folios(t)
            folios = folios[rng.random(folios.size) < o["fraction"]]
            target = 1 - int(m.memory.nid_of[folios[0]]) if folios.size else 0
            folios = folios[m.memory.nid_of[folios] != target]
            pinned = folios[: o["pins"]]
            m.memory.refcount[pinned] += 1  # a GUP pin
            e.faults["fail_migrate_alloc"].set(probability=o["alloc_fail"], times=-1)
            e.nr_max_batched_migration = o["batch"]
            before = e.statistics().vmstat
            untried_before = e.pages_untried
            pages_in = int(m.memory.folio_nr_pages(folios).sum())
            r = await e.migrate_pages(folios, target, o["reason"], o["mode"])
            e.faults["fail_migrate_alloc"].set(probability=0)
            after = e.statistics().vmstat
            m.memory.refcount[pinned] -= 1
            # every page handed in ends as exactly one of success, fail, untried
            s = r.stats
            assert s.nr_succeeded + s.nr_failed_pages + s.nr_untried_pages == pages_in
            # untried: -ENOMEM ended the call, or the split parts' pass (whose
            # return migrate_pages() ignores) stopped on it
            assert s.nr_untried_pages == 0 or r.rc == -errno.ENOMEM or s.nr_split
            assert (after["pgmigrate_success"] - before["pgmigrate_success"]
                    + after["pgmigrate_fail"] - before["pgmigrate_fail"]
                    + e.pages_untried - untried_before) == pages_in
            # a pinned folio cannot migrate: it stays where it was
            assert (m.memory.nid_of[pinned] != target).all()
            assert np.isin(pinned, m.memory.page_folio(r.failed)).all() or pinned.size == 0
            report = m.check_integrity()
            assert report.ok, report
            for node in m.memory.nodes:
                used = int((m.memory.folio_order[node.start_pfn:node.end_pfn] >= 0).sum())
                assert used + node.nr_free_pages == node.nr_pages
    if virtual:
        trio.run(main, clock=mock_clock())
    else:
        trio.run(main)


@settings(max_examples=40, deadline=None)
@given(st.lists(op, min_size=1, max_size=6))
def test_random_migrations_keep_every_invariant_virtual(ops):
    _run_ops(ops, virtual=True)


@settings(max_examples=8, deadline=None)
@given(st.lists(op, min_size=1, max_size=4))
def test_random_migrations_keep_every_invariant_real_bytes(ops):
    _run_ops(ops, virtual=False)


async def test_batches_are_cut_at_the_bound_like_the_kernel(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    e.nr_max_batched_migration = 300
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
    assert [r.nr_pages for r in records] == [300, 300, 300, 124]
    # a folio larger than the bound still forms a batch of its own
    t9 = m.add_tenant(TenantSpec("h", 4 * MiB, order=9))
    records.clear()
    await e.migrate_pages(m.tenant_folios(t9), 1, MigrateReason.MR_DEMOTION)
    assert [r.nr_pages for r in records] == [512, 512]


async def test_pinned_folio_retries_every_pass_then_fails(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, True)
    folios = m.tenant_folios(t)
    m.memory.refcount[folios[5]] += 1
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_SYSCALL)
    assert r.failed.tolist() == [folios[5]]
    assert r.rc == 1  # the kernel's nr_failed
    assert r.stats.nr_failed_pages == 1 and r.stats.nr_succeeded == folios.size - 1
    assert m.memory.nid_of[folios[5]] == 0 and m.check_integrity().ok
    # MIGRATE_ASYNC: migrate_pages() passes NR_MAX_MIGRATE_PAGES_RETRY (10,
    # mm/migrate.c) to migrate_pages_batch(); -EAGAIN every pass runs all 10.
    # 1 MiB is 256 4K folios: one batch, under NR_MAX_BATCHED_MIGRATION (512 pages).
    assert [(x.nr_folios, x.nr_passes, x.nr_failed) for x in records] == [(256, 10, 1)]


async def test_enomem_splits_thp_but_not_for_numa_misplaced(autojump_clock):
    for reason, expect_split in ((MigrateReason.MR_DEMOTION, 1),
                                 (MigrateReason.MR_NUMA_MISPLACED, 0)):
        m = make_machine(True)
        t = m.add_tenant(TenantSpec("t", 2 * MiB, order=9))
        e = make_engine(m, True)
        e.faults["fail_migrate_alloc"].set(probability=100, times=1)
        r = await e.migrate_pages(m.tenant_folios(t), 1, reason)
        s = e.statistics().vmstat
        assert s["thp_migration_split"] == expect_split
        if expect_split:  # the parts migrated as 512 base folios
            assert r.rc == 0 and s["pgmigrate_success"] == 512
            assert m.tenant_folios(t).size == 512
        else:
            assert r.rc == -errno.ENOMEM and s["pgmigrate_fail"] == 512
            assert s["thp_migration_fail"] == 1
        assert m.check_integrity().ok


async def test_sync_mode_retries_failures_folio_by_folio(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 256 * 1024, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    folios = m.tenant_folios(t)
    m.memory.refcount[folios[[3, 7]]] += 1
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_SYSCALL, MigrateMode.MIGRATE_SYNC)
    assert sorted(r.failed.tolist()) == sorted(folios[[3, 7]].tolist())
    # one async batch for all with NR_MAX_MIGRATE_ASYNC_RETRY (3) passes, then
    # one sync batch per failed folio with the remaining 7 (mm/migrate.c),
    # counted as they ran
    assert [(rec.mode, rec.nr_folios, rec.nr_passes) for rec in records] == [
        ("async", 64, 3), ("sync", 1, 7), ("sync", 1, 7)]
    assert e.statistics().calls == {"sync": 1}
    assert r.stats.nr_failed_pages == 2


class HalfCopier(Migrator):
    """Copies and marks the first half of each batch, then reports an error."""

    name = "half"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        half = batch.nr_folios // 2
        batch.memory.copy_folios(batch.dst[:half], batch.src[:half], batch.orders[:half])
        batch.mark_copied(slice(0, half))
        return -errno.EIO


class LyingCopier(Migrator):
    """A buggy migrator: marks folios copied without copying them."""

    name = "liar"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        batch.mark_copied()
        return 0


@pytest.mark.parametrize("virtual", [True, False])
async def test_fallback_copies_exactly_the_unmarked_folios(virtual):
    m = make_machine(virtual)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, virtual)
    e.registry.register(HalfCopier())
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
    assert r.rc == 0 and m.check_integrity().ok
    assert e.statistics().fallbacks == {"EIO": 128}
    assert records[0].fallback_cause == "EIO" and records[0].nr_fallback == 128


async def test_reason_outside_the_mask_is_not_offloaded():
    m = make_machine(False)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, False)
    e.registry.register(LyingCopier(), reason_mask=1 << MigrateReason.MR_DEMOTION)
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_COMPACTION)
    assert m.check_integrity().ok  # the liar never saw the batch


async def test_integrity_check_catches_a_migrator_that_lies():
    """The checks can fail: a migrator marking uncopied folios corrupts pages."""
    m = make_machine(False)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, False)
    e.registry.register(LyingCopier())
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
    report = m.check_integrity()
    assert report.corrupt_pages == t.nr_pages


async def test_movable_ops_folios_take_the_cpu_path(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0, movable_ops=True))
    e = make_engine(m, True)
    e.registry.register(LyingCopier())
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_COMPACTION)
    assert records[0].nr_offloaded == 0 and m.check_integrity().ok


async def test_mlocked_folios_stay_mlocked(autojump_clock):
    from migd.mm import PG_mlocked
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=2, mlocked=True))
    e = make_engine(m, True)
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_SYSCALL)
    heads = m.tenant_folios(t)
    assert (m.memory.nid_of[heads] == 1).all()
    assert (m.memory.flags[heads] & PG_mlocked).all()


async def test_first_folio_latency_and_inaccessible_time_are_recorded(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_SYSCALL)
    (rec,) = records
    # vanilla (no migrator): the move loop copies folio 0 and remaps it first,
    # so it waits for the batch's unmap loop (512 folios), the flush and its
    # own copy and move only.  The kernel's order, worked by hand over the
    # profile's parameters (data, not migd's cost functions): a 4K folio's
    # unmap and move each cost their per-folio time, half a page's PTE and
    # page work, and the cold surcharge (all 512 are among the call's first
    # cold_folios); its copy is 4096 bytes at copy_gbps.
    c = e.profile.cpu
    assert c.cold_folios >= 512
    half = (c.pte_us + c.page_us) / 2
    want_us = (512 * (c.unmap_folio_us + half + c.cold_folio_us) + c.flush_us
               + 4096 / (c.copy_gbps * 1e3) + c.move_folio_us + half + c.cold_folio_us)
    assert rec.first_folio_seconds == pytest.approx(want_us * 1e-6, rel=1e-9)
    assert rec.inaccessible_seconds.size == 512
    assert (rec.inaccessible_seconds > 0).all()
    h = e.statistics().inaccessible_seconds
    assert h.count == 512


@pytest.mark.parametrize("order", [0, 3, 9])
@pytest.mark.parametrize("batch", [1, 100, 512, 4096])
async def test_cpu_fast_path_matches_the_general_path(order, batch):
    """The compiled whole-batch path for the CPU copy must be indistinguishable
    from the engine's general path: same batches, counters, placement, content."""
    outcomes = []
    for force_general in (False, True):
        m = make_machine(False, node_mib=16)
        t = m.add_tenant(TenantSpec("t", 8 * MiB, order=order, mlocked=order == 3))
        e = make_engine(m, False)
        if force_general:  # armed, never fires: the fast path steps aside
            e.faults["fail_migrate_alloc"].set(probability=100, interval=10**9, times=-1)
        e.nr_max_batched_migration = batch
        pinned = m.tenant_folios(t)[[1]]
        m.memory.refcount[pinned] += 1
        records = []
        e.subscribe(records.extend)
        r = await e.move_pages(t, np.arange(t.nr_pages), 1)
        assert m.check_integrity().ok
        s = e.statistics()
        outcomes.append((
            r.rc, r.failed.tolist(), s.vmstat, s.folios_migrated, s.folios_failed,
            [(x.nr_folios, x.nr_pages, x.nr_failed) for x in records],
            m.memory.nid_of[m.tenant_folios(t)].tolist(),
            [n.nr_free_pages for n in m.memory.nodes], s.batch_pages.counts,
            int((m.memory.flags[m.tenant_folios(t)] != 0).sum())))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("virtual", [True, False])
async def test_concurrent_callers_on_overlapping_lists_isolate_like_the_kernel(virtual):
    """Callers pick folios, then migrate them: another caller may have taken or
    moved some meanwhile.  Isolation (PG_isolated) keeps each folio on one list;
    stale picks are dropped, nothing is migrated twice, nothing is lost."""
    m = make_machine(virtual, node_mib=32)
    t = m.add_tenant(TenantSpec("t", 8 * MiB, order=2))
    e = make_engine(m, virtual)
    e.nr_max_batched_migration = 64
    stale = m.tenant_folios(t)  # picked once, used after others moved folios

    async def caller(target, reason, sel):
        for _ in range(4):
            await e.migrate_pages(stale[sel], target, reason)
            await trio.sleep(0)

    async with trio.open_nursery() as n:
        n.start_soon(caller, 1, MigrateReason.MR_DEMOTION, slice(0, None, 2))
        n.start_soon(caller, 1, MigrateReason.MR_SYSCALL, slice(None))
        n.start_soon(caller, 0, MigrateReason.MR_NUMA_MISPLACED, slice(1, None, 3))
        n.start_soon(caller, 1, MigrateReason.MR_COMPACTION, slice(None, None, -1))
    report = m.check_integrity()
    assert report.ok, report
    s = e.statistics().vmstat
    assert s["pgmigrate_success"] > 0


@pytest.mark.parametrize("virtual", [True, False])
async def test_a_stale_pick_of_a_reused_pfn_is_not_isolated(virtual):
    """A caller picked a folio, which was freed and its pfn allocated again,
    not yet mapped (a fault's folio being zeroed, the prezero pool's, a
    migration's destination): ``folio_isolate_lru()`` fails on a folio that is
    on no LRU (``folio_test_clear_lru()``), so the call isolates nothing, makes
    no call, and the folio stays where its owner holds it."""
    m = make_machine(virtual, node_mib=32)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=0))
    e = make_engine(m, virtual)
    mem = m.memory
    mapped = m.tenant_folios(t)[:4]
    held = mem.folio_alloc(0, 0, 4)  # allocated, one reference, unmapped
    before = (mem.flags[held].copy(), mem.refcount[held].copy(), mem.nid_of[held].copy())
    r = await e.migrate_pages(np.r_[held, mapped], 1, MigrateReason.MR_COMPACTION)
    assert r.stats.nr_succeeded == 4  # the tenant's four, not the held ones
    assert (mem.folio_order[held] == 0).all()
    after = (mem.flags[held], mem.refcount[held], mem.nid_of[held])
    assert all((a == b).all() for a, b in zip(before, after, strict=True))
    r = await e.migrate_pages(held, 1, MigrateReason.MR_COMPACTION)
    assert r.stats.nr_succeeded == 0 and e.statistics().vmstat["pgmigrate_success"] == 4
    mem.folio_put(held)
    assert m.check_integrity().ok


@pytest.mark.parametrize("virtual", [True, False])
async def test_each_call_gets_its_own_cpu_copy_seconds(virtual):
    """Concurrent calls: each call's ``stats.cpu_copy_seconds`` holds its own
    copies, and together they are the books' total.  A CPU batch copy on
    threads is booked as CPU time too: four threads spread the copy, they do
    not make it cheaper than the vanilla path's (each thread copies its share
    at no more than one CPU's speed)."""
    from migd.offload import MtcopyMigrator

    per_migrator = {}
    for migrator in (None, MtcopyMigrator(threads=4)):
        m = make_machine(virtual, node_mib=32)
        t = m.add_tenant(TenantSpec("t", 8 * MiB, order=0))
        e = make_engine(m, virtual)
        if migrator is not None:
            e.registry.register(migrator)
        folios = m.tenant_folios(t)
        results = []

        async def call(sel, out=results, e=e, folios=folios):
            out.append(await e.migrate_pages(folios[sel], 1, MigrateReason.MR_SYSCALL))

        async with trio.open_nursery() as n:
            n.start_soon(call, slice(0, None, 2))
            n.start_soon(call, slice(1, None, 2))
        total = sum(e.statistics().cpu_copy_seconds.values())
        calls = [r.stats.cpu_copy_seconds for r in results]
        assert all(c > 0 for c in calls)
        assert sum(calls) == pytest.approx(total, rel=1e-12)
        per_migrator[migrator is None] = total
    if virtual:  # the modelled machine: real time would measure this machine's CPUs
        assert per_migrator[False] >= per_migrator[True] * 0.95
