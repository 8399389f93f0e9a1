"""The emulator-only knobs that answer the RFC's open questions, in process.

batch_copy (always|gated), the callers' list bounds and latency hints, tenants
as cgroups (memory.stat, DMA time charged per folio), fail_iommu_merge and
the IOMMU merge model (dma-iommu.c __finalise_sg()), SDXI's
dma_find_channel().  Expectations come from the kernel code each emulates
(mm/compaction.c COMPACT_CLUSTER_MAX, memcontrol.c memory_stats[] names,
dmaengine.c dma_find_channel()), never from a timing.
"""

import errno

import numpy as np
import pytest
import trio

from migd.daemon import System, build_tree, compact_node, load_config, promote_node
from migd.dma import sg_nents, sg_nents_slices
from migd.hw import VirtualClock, mock_clock
from migd.mm import MigrateMode

from .helpers import BARE, config

TWO = config("32M", [{"name": "a", "size": "4M"}, {"name": "b", "size": "4M", "order": 4}],
             dma={"profile": "zen3-ptdma"}, **{k: v for k, v in BARE.items() if k != "dma"})


def run(fn):
    return trio.run(fn, clock=mock_clock())


async def _with_dma(sys, body):
    async with trio.open_nursery() as n:
        n.start_soon(sys.dma.run)
        await body()
        n.cancel_scope.cancel()


def _system(text=TWO):
    sys = System(load_config(text=text), VirtualClock())
    return sys, build_tree(sys)


def _move(sys, tenant, nid=1):
    return sys.engine.move_pages(tenant, np.arange(0, tenant.nr_pages, 1 << tenant.spec.order),
                                 nid)


def test_bad_values_are_einval_and_change_nothing():
    sys, tree = _system()

    async def main():
        for path, bad in (("kernel/mm/migrate_offload/batch_copy", b"sometimes\n"),
                          ("kernel/mm/migrate_offload/callers/compaction/list_pages",
                           b"262145\n"),
                          ("kernel/mm/migrate_offload/callers/promotion/latency_tolerant",
                           b"maybe\n"),
                          ("kernel/debug/fail_iommu_merge/probability", b"101\n")):
            before = tree.read(path)
            with pytest.raises(OSError) as e:
                await tree.write(path, bad)
            assert e.value.errno == errno.EINVAL
            assert tree.read(path) == before
    run(main)
    assert tree.read("kernel/mm/migrate_offload/batch_copy") == b"gated\n"
    assert tree.attribute("kernel/mm/migrate_offload/batch_copy").mode & 0o777 == 0o644


def test_batch_copy_always_batch_copies_without_a_migrator():
    """always: the core's folios_mc_copy() takes every batch (nr_offloaded),
    in the vanilla kernel's books; gated: no batch copy without a migrator."""
    for mode, offloaded in (("gated", 0), ("always", 1024)):
        sys, tree = _system()
        records = []
        sys.engine.subscribe(records.append)

        async def main(tree=tree, sys=sys, mode=mode):
            await tree.write("kernel/mm/migrate_offload/batch_copy", mode.encode())
            await _with_dma(sys, lambda: _move(sys, sys.tenants[0]))
        run(main)
        assert sum(int(r.nr_offloaded.sum()) for r in records) == offloaded
        assert {r.migrator for r in records} == {"none"}
        assert sys.machine.check_integrity().ok


def test_compaction_lists_follow_the_list_bound():
    """COMPACT_CLUSTER_MAX (32 base pages) by default; the knob's bound otherwise."""
    for bound, pages_per_call in ((0, 32), (512, 512)):
        sys, tree = _system()
        calls = []
        sys.engine.subscribe_calls(lambda c, calls=calls: calls.append(c) if c.end else None)

        async def main(tree=tree, sys=sys, bound=bound):
            await tree.write("kernel/mm/migrate_offload/callers/compaction/list_pages",
                             str(bound).encode())
            await _with_dma(sys, lambda: compact_node(sys, 0, MigrateMode.MIGRATE_SYNC))
        run(main)
        small = [c for c in calls if c.nr_succeeded < 2048]  # tenant a: 1024 4K folios
        assert max(c.nr_succeeded for c in small) == pages_per_call


def test_a_latency_sensitive_caller_is_declined():
    """Promotion declares itself latency-sensitive; with decline_latency_sensitive
    dcbm leaves its batches to the move loop (books none), not otherwise."""
    for decline, who in ((b"0", {"dcbm"}), (b"1", {"none"})):
        sys, tree = _system()
        records = []
        sys.engine.subscribe(records.append)

        async def main(tree=tree, sys=sys, decline=decline, records=records):
            await tree.write("kernel/mm/migrate_offload/decline_latency_sensitive", decline)
            await tree.write("kernel/mm/migrate_offload/migrator", b"dcbm")
            await _with_dma(sys, lambda: _move(sys, sys.tenants[0]))
            records.clear()
            sys.machine.accessed[:] = True
            await _with_dma(sys, lambda: promote_node(sys, 1, 1.0, max_calls=8))
        run(main)
        assert tree.read("kernel/mm/migrate_offload/callers/promotion/latency_tolerant") \
            == b"0\n"
        assert {r.migrator for r in records} == who


def test_memory_stat_charges_dma_time_to_the_tenants_whose_folios_move():
    sys, tree = _system()

    async def main():
        await tree.write("kernel/mm/migrate_offload/migrator", b"dcbm")
        await _with_dma(sys, lambda: _move(sys, sys.tenants[1]))
    run(main)

    def stat(name):
        return dict(line.split() for line in tree.read(f"fs/cgroup/{name}/memory.stat")
                    .decode().splitlines())
    a, b = stat("a"), stat("b")
    for key in ("anon", "anon_thp", "pgdemote_kswapd", "pgpromote_success",
                "migrate_dma_busy_usec_dcbm", "migrate_copy_cpu_usec_none"):
        assert key in a
    assert int(a["anon"]) == 4 << 20
    assert int(a["migrate_dma_busy_usec_dcbm"]) == 0 < int(b["migrate_dma_busy_usec_dcbm"])
    busy = sum(c.busy_seconds for c in sys.dma.channels)
    charged = sum(sys.dma.busy_by_owner(t.tid) for t in sys.tenants)
    assert charged == pytest.approx(busy, rel=0.01)


@pytest.mark.parametrize("variant, fallbacks", [("v6", {"EINVAL": 1024}), ("newest", {})])
def test_an_armed_iommu_merge_fault_falls_back_with_einval_and_loses_nothing(variant, fallbacks):
    """v6 compares the two mapped scatterlists' nents (setup_sg_tables()):
    every batch falls back with -EINVAL.  The newest maps folio by folio
    (map_folios()) and has nothing to compare: the fault never applies."""
    sys, tree = _system()

    async def main():
        await tree.write("module/dcbm/parameters/variant", variant.encode())
        await tree.write("kernel/mm/migrate_offload/migrator", b"dcbm")
        await tree.write("kernel/debug/fail_iommu_merge/probability", b"100")
        await tree.write("kernel/debug/fail_iommu_merge/times", b"-1")
        await _with_dma(sys, lambda: _move(sys, sys.tenants[0]))
    run(main)
    st = sys.engine.statistics()
    assert st.fallbacks == fallbacks
    assert st.vmstat["pgmigrate_success"] == 1024
    assert sys.machine.check_integrity().ok


def test_sg_nents_is_what_finalise_sg_counts_from_the_entry_lengths():
    """Worked by hand from drivers/iommu/dma-iommu.c ``__finalise_sg()``: one
    entry per folio (offset 0, so ``!s_iova_off``), laid out back to back in
    one IOVA allocation; an entry joins the open segment while
    ``max_len - cur_len >= s_length`` (``unsigned int``), max_len = SZ_64K.
    40 entries of 4 KiB: 16 + 16 + 8 -> 3, whatever the physical addresses
    (they take no part).  16 KiB entries: 4 per segment, 40 -> 10.  Lengths
    32K, 64K, 32K: 32K opens; 64K - 32K < 64K opens; 64K - 64K < 32K opens
    -> 3.  Four 2 MiB entries: the first opens (cur_len = 2M); then
    64K - 2M wraps to 2^32 - 1984K >= 2M, so each later one joins -> 1.
    Without an IOMMU ``dma_direct_map_sg()`` returns nents unchanged -> 40."""
    four_k = np.zeros(40, dtype=np.int64)
    assert sg_nents(four_k, 64 << 10, True) == 3
    assert sg_nents(np.full(40, 2), 64 << 10, True) == 10
    assert sg_nents(np.array([3, 4, 3]), 64 << 10, True) == 3
    assert sg_nents(np.full(4, 9), 64 << 10, True) == 1
    assert sg_nents(four_k, 64 << 10, False) == 40



def test_each_channels_slice_is_mapped_on_both_sides_in_one_pass():
    """setup_sg_tables() maps each channel's slice on both sides.  40 4K folios
    in two slices of 20: each side of each slice is 16 entries joined to 64K,
    then 4 more -> 2 nents, 4 over the sources.  A destination slice opening
    with a 64K folio: it fills a segment alone, then 16 + 3 4K -> 3 nents
    against the source's 2, so that batch is uneven.  No IOMMU: 40, even."""
    bounds = np.array([[0, 20], [20, 40]])
    src = np.zeros(40, dtype=np.int8)
    assert sg_nents_slices(src, src.copy(), bounds, 64 << 10, True) == (4, True)
    dst = src.copy()
    dst[20] = 4
    assert sg_nents_slices(src, dst, bounds, 64 << 10, True) == (4, False)
    assert sg_nents_slices(src, dst, bounds, 64 << 10, False) == (40, True)

def test_a_compacted_layout_maps_both_sides_evenly():
    """Sources descending (isolate_migratepages_block() list_add()s each
    folio at the head), destinations ascending (compaction_alloc() splits a
    free block from its lowest page): both sides are 32 entries of 4 KiB, so
    ``__finalise_sg()`` gives 2 + 2 segments and dcbm v6 keeps the batch:
    map_sgtables() is True and counts 32 entries in 2 segments."""
    sys, _ = _system()
    pfns = np.sort(sys.tenants[0].pte_pfn[:64])  # tenant a's 4 KiB folios
    src, dst = pfns[31::-1].copy(), pfns[32:].copy()
    order = sys.machine.memory.folio_order[src]
    assert not order.any() and not sys.machine.memory.folio_order[dst].any()
    assert sys.dma.map_sgtables(src, dst, order)
    assert (sys.dma.sg_entries, sys.dma.sg_segments, sys.dma.sg_mismatches) == (32, 2, 0)


def test_sdxi_channels_come_from_dma_find_channel_shared():
    text = config("16M", [{"name": "t", "size": "2M"}], dma={"profile": "sdxi"},
                  **{k: v for k, v in BARE.items() if k != "dma"})
    sys, _ = _system(text)
    first = sys.dma.request_channels(16)
    second = sys.dma.request_channels(16)  # not released: shared, never EBUSY
    assert len(first) == len(second) == 1 and first[0] is second[0]
    assert first[0].client_count == 2


@pytest.mark.parametrize("variant", ["v6", "newest"])
def test_bench_callers_runs_dcbm_as_the_variant_asked(variant, monkeypatch):
    """``bench callers --variant``: the dcbm row runs that iteration (its
    migrator's variant is in the row), and the newest, whose PTDMA groups
    hold one channel each, gives a batch one channel where v6 claims four."""
    from migd.bench import BenchOptions, MigratorSpec, _callers

    made = []
    make = _callers.make_migrator
    monkeypatch.setattr(_callers, "make_migrator",
                        lambda *a: made.append(make(*a)) or made[-1])
    opts = BenchOptions(clock="virtual", profile="zen3-ptdma", total=2 << 20, variant=variant)
    row = run(lambda: _callers.caller_row(opts, "move_pages", 0, 0, MigratorSpec("dcbm", 4)))
    assert row.extra["variant"] == variant
    assert made[0].channels_claimed == [4 if variant == "v6" else 1]
