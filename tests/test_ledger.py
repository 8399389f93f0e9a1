"""Every number as the kernel counts it: whose books a batch goes in, per-folio
inaccessible time, do_pages_move()'s early exit, the split pass, and one count
of a call across trace, vmstat and /metrics.

Each expected value is worked by hand from the mm/migrate.c function named in
the test, never from migd's own functions.
"""

import numpy as np
import pytest
import trio

from migd.daemon import System, build_tree, load_config
from migd.dma import DmaDevice
from migd.hw import Clock, VirtualClock, get_profile, mock_clock
from migd.migrate import MigrationEngine, Path
from migd.mm import PAGE_SIZE, MigrateMode, MigrateReason, TenantSpec
from migd.offload import DcbmMigrator, MtcopyMigrator
from migd.tracing import Tracing

from .helpers import SMALL_CONFIG, make_engine, make_machine
from .helpers import scrape_collector as scrape


def total(samples: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def _dcbm_for_demotion_only(batch_size: int = 0):
    sys = System(load_config(text=SMALL_CONFIG))
    tree = build_tree(sys)
    await sys.set_migrator("dcbm")
    await tree.write("module/dcbm/parameters/reason_mask", b"demotion")
    if batch_size:
        await tree.write("module/dcbm/parameters/batch_size", str(batch_size).encode())
    return sys, tree


async def test_a_move_pages_outside_the_mask_is_the_vanilla_kernels():
    """RFC v6 ``migrate_should_offload()``: MR_SYSCALL is not in dcbm's mask
    (demotion only), so ``migrate_pages_batch()`` never calls dcbm: the 512
    folios of the tenant are copied in the move loop, as with no migrator.
    dcbm's counters and metric series stay at 0; ``none``'s get the 512."""
    sys, tree = await _dcbm_for_demotion_only()
    t = sys.tenants[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        r = await sys.engine.move_pages(t, np.arange(t.nr_pages), 1)
        nursery.cancel_scope.cancel()
    assert r.rc == 0 and r.failed.size == 0
    s = scrape(sys)
    assert tree.read("module/dcbm/parameters/folios_migrated") == b"0\n"
    assert tree.read("module/dcbm/parameters/folios_failures") == b"0\n"
    assert total(s, "migd_migrated_folios_total", migrator="dcbm") == 0
    assert total(s, "migd_batches_total", migrator="dcbm") == 0
    assert total(s, "migd_migrated_folios_total", migrator="none",
                 reason="syscall_or_cpuset") == 512
    assert total(s, "migd_batches_total", migrator="none") == 1
    assert total(s, "migd_dma_channel_transferred_bytes_total") == 0


async def test_a_migrators_batch_size_bounds_only_the_batches_it_takes():
    """``migrate_pages()`` cuts the list when ``nr_pages >= NR_MAX_BATCHED_MIGRATION``
    (512): 512 4K folios of move_pages are one batch.  dcbm (batch_size 8)
    takes demotion only, so only demotion's list is cut every 8 pages: 64 batches."""
    sys, _ = await _dcbm_for_demotion_only(batch_size=8)
    t = sys.tenants[0]
    records = []
    sys.engine.subscribe(records.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        await sys.engine.move_pages(t, np.arange(t.nr_pages), 1)
        syscall = [int(n) for r in records for n in r.nr_pages]
        records.clear()
        folios = sys.machine.tenant_folios(t)
        await sys.engine.migrate_pages(folios, 0, MigrateReason.MR_DEMOTION)
        demotion = [(r.migrator, int(n)) for r in records for n in r.nr_pages]
        nursery.cancel_scope.cancel()
    assert syscall == [512]
    assert demotion == [("dcbm", 8)] * 64


def _vanilla_real_clock_batch(pin_last: bool):
    async def main():
        m = make_machine(False)
        t = m.add_tenant(TenantSpec("t", 2 << 20, order=0))  # 512 folios: one batch
        e = make_engine(m, False)
        folios = m.tenant_folios(t)
        if pin_last:  # a folio that cannot unmap at once: the general path's batch
            m.memory.refcount[folios[-1]] += 1
        recs = []
        e.subscribe(recs.extend)
        await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
        return recs
    return trio.run(main)


def test_real_clock_vanilla_books_each_folio_from_its_unmap_to_its_remap():
    """``migrate_pages_batch()`` with no batch copy: ``migrate_folios_move()``
    copies and remaps folio k before it touches folio k + 1, and folio k was
    unmapped at its own turn of the unmap loop.  So only the last folio can be
    inaccessible for (nearly) the whole batch; folio k's time is its own
    ``remap - unmap``, different for each, and the middle folio's is less than
    the batch's.  Both the compiled and the general path (a pinned folio)."""
    for pin_last in (False, True):
        (rec,) = _vanilla_real_clock_batch(pin_last)
        inacc = rec.inaccessible_seconds
        batch = rec.end - rec.start
        assert inacc.size == 512 - pin_last and (inacc > 0).all()
        assert (inacc <= batch).all()
        assert np.unique(inacc).size > inacc.size // 2, "one time for every folio"
        assert np.median(inacc) < batch


async def _move_pages_case(vpages, nodes, pinned_vpage):
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 8 * PAGE_SIZE, order=0))
    e = make_engine(m, True)
    m.memory.refcount[m.memory.page_folio(t.pte_pfn[[pinned_vpage]])] += 1  # a GUP pin
    calls = []
    e.subscribe_calls(calls.append)
    r = await e.move_pages(t, np.array(vpages), np.array(nodes))
    nids = m.memory.nid_of[m.memory.page_folio(t.pte_pfn)]
    return r, nids, sum(c.end for c in calls)


async def test_move_pages_stops_after_a_call_that_failed_pages(autojump_clock):
    """``do_pages_move()``: pages 0..3 go to node 1, page 4 to node 0 (where
    it is); the node change at i = 4 flushes 0..3 through
    ``move_pages_and_store_status()``, whose ``migrate_pages()`` fails the
    pinned page 1 (err = 1); ``err += nr_pages - i`` = 1 + 8 - 4 = 5 and
    ``goto out``: pages 5..7 are never looked at."""
    r, nids, nr_calls = await _move_pages_case(range(8), [1, 1, 1, 1, 0, 1, 1, 1], 1)
    assert r.rc == 5
    assert nr_calls == 1
    assert nids.tolist() == [1, 0, 1, 1, 0, 0, 0, 0]


async def test_move_pages_counts_the_page_that_flushed_once(autojump_clock):
    """``do_pages_move()``: page 0's folio is queued again at i = 2 (-EBUSY from
    ``folio_isolate_lru()``), so its status is stored and the list 0..1 is
    flushed; the pinned page 1 fails (err = 1), ``err += 5 - 2`` = 4, then
    "we have accounted for page i": ``err--`` = 3.  Pages 2.. stay."""
    r, nids, nr_calls = await _move_pages_case([0, 1, 0, 2, 3], [1] * 5, 1)
    assert r.rc == 3
    assert nr_calls == 1
    assert nids.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


async def test_enomem_in_the_split_pass_does_not_end_the_call(autojump_clock):
    """``migrate_pages()`` ignores the split pass's return.  A THP (batch 1:
    512 pages) whose destination allocation fails is split (nr_thp_failed 1,
    nr_thp_split 1, nr_split 1, one failure); the split pass's first part
    fails to allocate too: ``-ENOMEM``, 1 failed page, the other 511 parts
    untried.  The call goes on: batch 2's 16 small folios all migrate.
    rc: 1 (the split THP), 16 pages succeeded."""
    m = make_machine(True)
    thp = m.add_tenant(TenantSpec("thp", 2 << 20, order=9))
    small = m.add_tenant(TenantSpec("small", 16 * PAGE_SIZE, order=0))
    e = make_engine(m, True)
    e.faults["fail_migrate_alloc"].set(probability=100, interval=1, times=2)
    folios = np.concatenate([m.tenant_folios(thp), m.tenant_folios(small)])
    r = await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
    s = r.stats
    assert r.rc == 1
    assert (s.nr_succeeded, s.nr_failed_pages, s.nr_untried_pages) == (16, 1, 511)
    assert (s.nr_thp_failed, s.nr_thp_split, s.nr_split) == (1, 1, 1)
    assert (m.memory.nid_of[m.tenant_folios(small)] == 1).all()
    assert m.check_integrity().ok


def _trace_sum(text: str, event: str, field: str) -> int:
    return sum(int(ln.split(f" {field}=")[1].split()[0])
               for ln in text.splitlines() if f" {event}: " in ln)


async def test_trace_vmstat_and_metrics_agree_page_for_page_under_failed_allocations():
    """``migrate_pages()`` adds ``stats.nr_succeeded`` to PGMIGRATE_SUCCESS and
    passes the same stats to ``trace_mm_migrate_pages()``: per call, the two
    are one number, and so is /metrics.  With ``fail_migrate_alloc`` armed
    (-ENOMEM, splits, untried folios), across move_pages and demotion calls."""
    sys = System(load_config(text=SMALL_CONFIG))
    tracing = Tracing(0.0)
    tracing.attach(sys.engine)
    sys.faults["fail_migrate_alloc"].seed(3)
    sys.faults["fail_migrate_alloc"].set(probability=5, interval=1, times=-1)
    t = sys.tenants[0]
    before = sys.engine.statistics().vmstat
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        for k in range(4):
            await sys.engine.move_pages(t, np.arange(t.nr_pages), (k + 1) % 2)
            await sys.engine.migrate_pages(sys.machine.tenant_folios(t), k % 2,
                                           MigrateReason.MR_DEMOTION, MigrateMode.MIGRATE_ASYNC)
        nursery.cancel_scope.cancel()
    after = sys.engine.statistics().vmstat
    text = tracing.ring.snapshot(2)
    s = scrape(sys)
    ok = after["pgmigrate_success"] - before["pgmigrate_success"]
    fail = after["pgmigrate_fail"] - before["pgmigrate_fail"]
    assert ok > 0 and fail > 0, "the fault fired"
    assert _trace_sum(text, "mm_migrate_pages", "nr_succeeded") == ok
    assert _trace_sum(text, "mm_migrate_pages", "nr_failed") == fail
    assert total(s, "migd_pgmigrate_success_pages_total") == ok
    assert total(s, "migd_pgmigrate_fail_pages_total") == fail
    # 4K folios: the per-migrator books count the same pages as vmstat
    assert total(s, "migd_migrated_bytes_total") == ok * PAGE_SIZE
    assert total(s, "migd_failed_bytes_total") == fail * PAGE_SIZE
    # the per-batch events succeed only what migrated (untried folios are not)
    assert _trace_sum(text, "migrate_offload_batch", "nr_succeeded") == ok


def _books_one_way(virtual: bool, path, migrator: str) -> tuple:
    """Move a tenant by move_pages (MR_SYSCALL, outside the migrator's mask),
    then demote it (in the mask), one folio pinned, every batch on ``path``;
    the counts every surface reads."""
    async def main():
        m = make_machine(virtual, node_mib=8)
        t = m.add_tenant(TenantSpec("t", 1 << 20, order=0))
        clock = VirtualClock() if virtual else Clock()
        hw = get_profile("native")
        e = MigrationEngine(m, clock, hw)
        e.paths = frozenset({path})
        e.nr_max_batched_migration = 64
        dma = DmaDevice(0, m.memory, clock, hw.dma, e.faults)
        name, _, param = migrator.partition(":")
        mig = {"mtcopy": lambda: MtcopyMigrator(int(param)),
               "dcbm": lambda: DcbmMigrator(dma, int(param))}.get(name, lambda: None)()
        if mig is not None:
            e.registry.register(mig, 1 << MigrateReason.MR_DEMOTION)
        folios = m.tenant_folios(t)
        m.memory.refcount[folios[100]] += 1
        recs = []
        e.subscribe(recs.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            r1 = await e.move_pages(t, np.arange(t.nr_pages), 1)
            r2 = await e.migrate_pages(m.tenant_folios(t), 0, MigrateReason.MR_DEMOTION)
            nursery.cancel_scope.cancel()
        assert m.check_integrity().ok
        s = e.statistics()
        return (r1.rc, r2.rc, s.vmstat, s.folios_migrated, s.folios_failed, s.batches,
                s.fallbacks, sorted(s.cpu_copy_seconds),
                [(r.migrator, int(n), int(f)) for r in recs
                 for n, f in zip(r.nr_folios, r.nr_failed, strict=True)],
                getattr(mig, "folios_migrated", None), getattr(mig, "folios_failures", None),
                m.memory.nid_of[m.tenant_folios(t)].tolist())
    return trio.run(main, clock=mock_clock()) if virtual else trio.run(main)


@pytest.mark.parametrize("migrator", ["none", "mtcopy:2", "dcbm:2"])
def test_every_way_keeps_the_same_books(migrator):
    """The same lists through every path on both clocks (general, compiled on
    the real clock, closed form on the virtual one): one set of books."""
    ways = [(False, Path.GENERAL), (False, Path.COMPILED), (True, Path.GENERAL),
            (True, Path.CLOSED_FORM)]
    books = {w: _books_one_way(*w, migrator) for w in ways}
    first = books[ways[0]]
    for w in ways[1:]:
        assert books[w] == first, w
    # and they are the kernel's: 256 folios out (one pinned stays), then 255 back
    # by demotion; move_pages is never the migrator's
    migrated = first[3]
    assert migrated.get(("none", "syscall_or_cpuset")) == 255
    demoter = "none" if migrator == "none" else migrator.split(":")[0]
    assert migrated.get((demoter, "demotion")) == 255


async def test_a_descriptor_error_ptdma_does_not_report_is_found_by_the_integrity_check(
        autojump_clock):
    """PTDMA's ``pt_handle_active_desc()`` invokes every descriptor's callback
    with a NULL result, which ``dmaengine_desc_callback_invoke()`` reads as
    DMA_TRANS_NOERROR: dcbm's error check never fires, v6 marks all 64 folios
    copied, no fallback.  The one failed descriptor's folio is remapped
    uncopied; the integrity check finds it, the device counts it.  The same
    fault on an engine that reports errors (DSA) falls the batch back, intact."""
    out = {}
    for profile in ("zen3-ptdma", "dsa"):
        m = make_machine(True)
        t = m.add_tenant(TenantSpec("t", 64 * PAGE_SIZE, order=0))
        hw = get_profile(profile)
        e = MigrationEngine(m, VirtualClock(), hw)
        dma = DmaDevice(0, m.memory, e.clock, hw.dma, e.faults)
        dcbm = DcbmMigrator(dma, nr_dma_chan=2)
        e.registry.register(dcbm)
        e.faults["fail_dma_desc"].set(probability=100, interval=1, times=1)
        async with trio.open_nursery() as n:
            n.start_soon(dma.run)
            r = await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
            n.cancel_scope.cancel()
        report = m.check_integrity()
        out[profile] = (hw.dma.reports_errors, r.rc, dcbm.folios_migrated,
                        dcbm.folios_failures, e.statistics().fallbacks,
                        dma.unreported_errors, report.ok)
    assert out["zen3-ptdma"] == (False, 0, 64, 0, {}, 1, False)
    assert out["dsa"] == (True, 0, 0, 64, {"EIO": 64}, 0, True)
