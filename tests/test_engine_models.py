"""The engine's models in process: batch-end rule, chooser, books, errors,
-ENOMEM's untried folios and the sync modes' wait for a locked folio.

Expectations come from mm/migrate.c: ``migrate_pages()`` cuts a batch once
``nr_pages >= NR_MAX_BATCHED_MIGRATION``; on -ENOMEM ``migrate_pages_batch()``
counts the folio that failed and those waiting for a retry in that pass
(``nr_failed_pages += nr_pages + nr_retry_pages``), moves what it unmapped and
returns, leaving the rest of the list uncounted; ``migrate_folio_unmap()``
fails ``folio_trylock()`` with -EAGAIN under MIGRATE_ASYNC and sleeps in
``folio_lock()`` otherwise.
"""

import errno

import numpy as np
import pytest
import trio

from migd.migrate import MIGRATOR_ERROR, BatchRecord, MigratorError
from migd.migrate._auto import EXPLORE_EVERY, OffloadChooser
from migd.migrate._kernels import batch_end
from migd.mm import MigrateMode, MigrateReason, PG_locked, TenantSpec
from migd.offload import CopyBatch, Migrator, MtcopyMigrator

from .helpers import MiB, make_engine, make_machine


@pytest.mark.parametrize(("sizes", "bound", "crossing", "ends"), [
    ([1] * 10, 4, True, [4, 8, 10]),
    ([3, 3, 3], 4, True, [2, 3]),  # the folio reaching the bound ends the batch
    ([3, 3, 3], 4, False, [1, 2, 3]),  # under a budget: never cross it
    ([512, 1, 512], 512, True, [1, 3]),
    ([8], 4, False, [1]),  # one folio at least
])
def test_batch_end_is_the_kernels_cut(sizes, bound, crossing, ends):
    cum = np.cumsum(np.array(sizes, dtype=np.int64))
    got, i = [], 0
    while i < cum.size:
        i = int(batch_end(cum, i, bound, crossing))
        got.append(i)
    assert got == ends


def test_chooser_takes_the_faster_way_and_explores():
    c = OffloadChooser()
    key = c.key(4, 512, 512)
    assert c.offload(key)  # nothing known: try offload first
    c.observe(key, True, 2e-10)
    assert not c.offload(key)  # the CPU way is unknown: try it
    c.observe(key, False, 1e-10)
    ways = [c.offload(key) for _ in range(2 * EXPLORE_EVERY)]
    # The CPU is faster; offload tried at 2, 4, 8, .. decisions after the
    # choice was made, then once per EXPLORE_EVERY.
    assert ways[:EXPLORE_EVERY].count(True) == EXPLORE_EVERY.bit_length() - 1
    assert ways[EXPLORE_EVERY:].count(True) == 1


async def test_engine_owns_one_chooser_per_migrator(autojump_clock):
    m = make_machine(True)
    e = make_engine(m, True)
    a, b = MtcopyMigrator(2), MtcopyMigrator(4)
    assert e.chooser(a) is e.chooser(a) and e.chooser(a) is not e.chooser(b)
    assert not hasattr(Migrator, "choose_way") and Migrator.cpu_threads == 0


class Raiser(Migrator):
    """A buggy migrator: marks the first half copied (without copying), then raises."""

    name = "raiser"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        batch.mark_copied(slice(0, batch.nr_folios // 2))
        raise RuntimeError("bug in the copy callback")


async def test_a_migrators_exception_is_counted_reported_and_loses_nothing(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 1 * MiB, order=2))
    e = make_engine(m, True)
    e.registry.register(Raiser())
    errors: list[MigratorError] = []
    e.subscribe_errors(errors.append)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    folios = m.tenant_folios(t)
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
    assert r.rc == 0 and r.failed.size == 0
    assert (m.memory.nid_of[m.tenant_folios(t)] == 1).all()
    assert m.check_integrity().ok  # the marked-but-uncopied half was copied too
    s = e.statistics()
    assert s.migrator_errors == {"raiser": len(records)}
    assert s.fallbacks == {MIGRATOR_ERROR: folios.size}
    assert [(x.nr_offloaded, x.nr_fallback, x.fallback_cause) for x in records] == [
        (x.nr_folios, x.nr_folios, MIGRATOR_ERROR) for x in records]
    assert len(errors) == len(records) and errors[0].migrator == "raiser"
    assert isinstance(errors[0].error, RuntimeError) and errors[0].error.__traceback__


async def test_enomem_stops_and_leaves_the_rest_untried(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 64 * 4096, order=0))
    e = make_engine(m, True)
    e.nr_max_batched_migration = 16
    e.faults["fail_migrate_alloc"].set(probability=100, interval=20, times=1)
    folios = m.tenant_folios(t)
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
    # batch 1 (16) moves; batch 2 unmaps 3, the 20th allocation fails: the 3
    # are moved, the 20th fails, the 44 after it are never tried
    assert r.rc == -errno.ENOMEM
    s = r.stats
    assert (s.nr_succeeded, s.nr_failed_pages, s.nr_untried_pages) == (19, 1, 44)
    assert sorted(r.failed.tolist()) == sorted(folios[19:].tolist())
    v = e.statistics()
    assert v.vmstat["pgmigrate_success"] == 19 and v.vmstat["pgmigrate_fail"] == 1
    assert v.pages_untried == 44 and v.pages_attempted == 64 and v.pages_in_flight == 0
    assert (m.memory.nid_of[folios[19:]] == 0).all() and m.check_integrity().ok


@pytest.mark.parametrize("mode", [MigrateMode.MIGRATE_SYNC_LIGHT, MigrateMode.MIGRATE_SYNC])
async def test_sync_modes_wait_for_a_locked_folio(mode, autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 16 * 4096, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    folios = m.tenant_folios(t)
    m.memory.flags[folios[5]] |= PG_locked  # someone else holds the folio lock

    async def unlock_later():
        await trio.sleep(0.05)
        m.memory.flags[folios[5]] ^= PG_locked
        m.wake_remapped()  # folio_unlock() wakes the folio's waiters

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(unlock_later)
            t0 = trio.current_time()
            r = await e.migrate_pages(folios, 1, MigrateReason.MR_COMPACTION, mode)
    assert r.failed.size == 0 and trio.current_time() - t0 >= 0.05
    # the batch tried async (3 passes, -EAGAIN), then the folio alone in the
    # call's mode slept in folio_lock() and went through on its first pass
    assert [(x.mode, x.nr_folios, x.nr_passes) for x in records] == [
        ("async", 16, 3), (mode.value, 1, 1)]
    assert e.statistics().calls == {mode.value: 1}
    assert m.check_integrity().ok


async def test_async_mode_does_not_wait_for_a_locked_folio(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 16 * 4096, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    folios = m.tenant_folios(t)
    m.memory.flags[folios[5]] |= PG_locked
    with trio.fail_after(5):
        r = await e.migrate_pages(folios, 1, MigrateReason.MR_NUMA_MISPLACED)
    assert r.failed.tolist() == [folios[5]] and r.rc == 1
    assert [(x.mode, x.nr_passes) for x in records] == [("async", 10)]
    m.memory.flags[folios[5]] ^= PG_locked


async def test_a_caller_cancelled_in_folio_lock_leaves_nothing_behind(autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 16 * 4096, order=0))
    e = make_engine(m, True)
    folios = m.tenant_folios(t)
    m.memory.flags[folios[[2, 5]]] |= PG_locked  # never unlocked
    with trio.move_on_after(0.5) as scope:
        await e.migrate_pages(folios, 1, MigrateReason.MR_SYSCALL, MigrateMode.MIGRATE_SYNC)
    assert scope.cancelled_caught
    m.memory.flags[folios[[2, 5]]] ^= PG_locked
    report = m.check_integrity()
    assert report.ok and report.stale_isolated == 0, report
    assert (m.memory.nid_of[folios[[2, 5]]] == 0).all()
    v = e.statistics()
    assert v.vmstat["pgmigrate_success"] == 14 and v.vmstat["pgmigrate_fail"] == 2
    assert v.pages_in_flight == 0 and v.pages_attempted == 16
