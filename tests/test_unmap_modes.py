"""What ``migrate_folio_unmap()`` (mm/migrate.c) does with a locked folio and a
folio under writeback, in each mode, worked from the kernel function:

    if (!folio_trylock(src)) {
        if (mode == MIGRATE_ASYNC) goto out;            /* -EAGAIN */
        if (current->flags & PF_MEMALLOC) goto out;     /* direct compaction */
        folio_lock(src);                                /* every pass */
    }
    if (folio_test_writeback(src)) {
        switch (mode) { case MIGRATE_SYNC: break; default: rc = -EBUSY; goto out; }
        folio_wait_writeback(src);
    }

and ``migrate_pages_batch()``'s switch: -EAGAIN retries next pass (up to
``nr_pass``), anything else (-EBUSY) is a permanent failure, off the list at
once.  ``migrate_pages_sync()`` runs the list MIGRATE_ASYNC with
NR_MAX_MIGRATE_ASYNC_RETRY (3) passes, then each failure alone in the call's
mode with NR_MAX_MIGRATE_SYNC_RETRY (10 - 3 = 7).
"""

import numpy as np
import pytest
import trio

from migd.hw import VirtualClock, get_profile
from migd.migrate import BatchRecord, MigrationEngine
from migd.mm import MigrateMode, MigrateReason, PG_locked, PG_writeback, TenantSpec

from .helpers import make_engine, make_machine


def setup(flag: int):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 16 * 4096, order=0))
    e = make_engine(m, True)
    records: list[BatchRecord] = []
    e.subscribe(records.extend)
    folios = m.tenant_folios(t)
    m.memory.flags[folios[5]] |= flag
    return m, e, records, folios


def rows(records):
    return [(r.mode, r.nr_folios, r.nr_passes, r.nr_failed) for r in records]


async def test_async_fails_a_folio_under_writeback_at_once(autojump_clock):
    m, e, records, folios = setup(PG_writeback)
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
    # -EBUSY: counted failed in pass 1, never retried; the other 15 unmap in
    # pass 1 too, so no folio is left to retry: one pass.
    assert r.rc == 1 and r.failed.tolist() == [folios[5]]
    assert rows(records) == [("async", 16, 1, 1)]
    v = e.statistics().vmstat
    assert (v["pgmigrate_success"], v["pgmigrate_fail"]) == (15, 1)
    m.memory.flags[folios[5]] ^= PG_writeback
    assert m.check_integrity().ok


async def test_sync_light_does_not_wait_for_writeback(autojump_clock):
    m, e, records, folios = setup(PG_writeback)
    with trio.fail_after(5):
        r = await e.migrate_pages(folios, 1, MigrateReason.MR_COMPACTION,
                                  MigrateMode.MIGRATE_SYNC_LIGHT)
    assert r.rc == 1 and r.failed.tolist() == [folios[5]]
    assert rows(records) == [("async", 16, 1, 1), ("sync_light", 1, 1, 1)]
    m.memory.flags[folios[5]] ^= PG_writeback


async def test_sync_waits_for_writeback(autojump_clock):
    m, e, records, folios = setup(PG_writeback)

    async def end_writeback():
        await trio.sleep(0.05)
        m.memory.flags[folios[5]] ^= PG_writeback
        m.wake_remapped()  # folio_end_writeback() wakes the folio's waiters

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(end_writeback)
            t0 = trio.current_time()
            r = await e.migrate_pages(folios, 1, MigrateReason.MR_SYSCALL,
                                      MigrateMode.MIGRATE_SYNC)
    assert r.rc == 0 and r.failed.size == 0 and trio.current_time() - t0 >= 0.05
    # the async attempt's -EBUSY is retried alone in MIGRATE_SYNC, which waits
    assert rows(records) == [("async", 16, 1, 1), ("sync", 1, 1, 0)]
    assert e.statistics().vmstat["pgmigrate_success"] == 16
    assert m.check_integrity().ok


async def test_direct_compaction_never_sleeps_on_a_folio_lock(autojump_clock):
    m, e, records, folios = setup(PG_locked)  # held by someone, never released
    with trio.fail_after(5):
        r = await e.migrate_pages(folios, 1, MigrateReason.MR_COMPACTION,
                                  MigrateMode.MIGRATE_SYNC_LIGHT, memalloc=True)
    # PF_MEMALLOC: the trylock failure is -EAGAIN in every pass of both runs
    assert r.rc == 1 and r.failed.tolist() == [folios[5]]
    assert rows(records) == [("async", 16, 3, 1), ("sync_light", 1, 7, 1)]
    m.memory.flags[folios[5]] ^= PG_locked


class RelockClock(VirtualClock):
    """The virtual clock, plus a lock holder acting between two unmap passes:
    at its first charge once ``arm`` is set it takes the folio lock and drops
    the pin, and lets the lock go 50 ms later."""

    def __init__(self, mem, folio: int) -> None:
        super().__init__()
        self.mem, self.folio, self.arm, self.nursery = mem, folio, False, None

    async def spend(self, seconds: float) -> None:
        if self.arm:
            self.arm = False
            self.mem.flags[self.folio] |= PG_locked
            self.mem.refcount[self.folio] -= 1
            self.nursery.start_soon(self.unlock)
        await super().spend(seconds)

    async def unlock(self):
        await trio.sleep(0.05)
        self.mem.flags[self.folio] ^= PG_locked
        self.machine.wake_remapped()


@pytest.mark.parametrize("mode", [MigrateMode.MIGRATE_SYNC_LIGHT, MigrateMode.MIGRATE_SYNC])
async def test_sync_modes_take_the_folio_lock_on_every_pass(mode, autojump_clock):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 16 * 4096, order=0))
    folios = m.tenant_folios(t)
    x = int(folios[5])
    m.memory.refcount[x] += 1  # pinned: -EAGAIN on the first passes
    clock = RelockClock(m.memory, x)
    clock.machine = m
    e = MigrationEngine(m, clock, get_profile("zen3-ptdma"))
    records: list[BatchRecord] = []

    def on_batch(recs):
        records.extend(recs)
        if len(records) == 1:  # the async run is over: act after the next pass
            clock.arm = True
    e.subscribe(on_batch)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            clock.nursery = n
            r = await e.migrate_pages(np.asarray(folios), 1, MigrateReason.MR_SYSCALL, mode)
    # sync pass 1: -EAGAIN (pinned); then the folio is locked and unpinned;
    # pass 2 sleeps in folio_lock() and goes through.  Taking the lock only
    # before pass 1 would fail passes 2..7 with -EAGAIN.
    assert r.rc == 0 and r.failed.size == 0
    assert rows(records) == [("async", 16, 3, 1), (mode.value, 1, 2, 0)]
    assert m.check_integrity().ok
