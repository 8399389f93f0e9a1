"""``bench callers``: each caller of ``migrate_pages()`` x its list bound x migrator.

The RFC's open questions 1, 2 and 4 are per caller: the callers hand
``migrate_pages()`` lists of very different lengths (one folio per NUMA
hinting fault, COMPACT_CLUSTER_MAX = 32 base pages per compaction list,
SWAP_CLUSTER_MAX = 32 per reclaim isolation, a whole run for move_pages(2)
and DAMON), and a batch can be no longer than its list, so DMA's payoff
depends on the caller.  Each row runs the daemon's own caller
(``daemon._workloads``: ``promote_node``, ``demote_node``, ``compact_node``,
``direct_compact``, ``move_tenant``, ``damon_migrate``) on a fresh System
(one tenant of ``--total``) with its list bound set through the emulator-only
knob ``callers/<caller>/list_pages`` (0: the kernel's), and measures the whole
caller's pass: throughput, first-folio latency, inaccessible time and the
CPU seconds spent copying; ``cpu_saved_seconds`` is the ``none`` row's copy
CPU less this row's (same caller, bound, order and ``batch_copy``).
Rejected: cutting a move_pages() list by hand in the rig (it would measure
the rig, not the callers the daemon runs).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ..daemon import (
    CALLERS,
    System,
    compact_node,
    damon_migrate,
    demote_node,
    direct_compact,
    load_config,
    move_tenant,
    promote_node,
)
from ..hw import Clock, VirtualClock
from ..migrate import BatchRecords
from ..mm import HPAGE_PMD_ORDER, PAGE_SIZE, MigrateMode
from ._report import BenchReport, BenchRow
from ._rig import BenchOptions, latency_summary, make_migrator

if TYPE_CHECKING:
    from ._options import MigratorSpec

#: The kernel's own list per caller, in base pages (0: no bound but the run).
KERNEL_LIST_PAGES = {"promotion": 1, "demotion": 32, "compaction": 32, "kcompactd": 32,
                     "direct_compaction": 32, "move_pages": 0, "damon": 0}
MODES = {"promotion": "async", "demotion": "async", "compaction": "sync",
         "kcompactd": "sync_light", "direct_compaction": "async", "move_pages": "sync",
         "damon": "async"}
DEFAULT_LIST_PAGES = (1, 32, 512, 4096)


def _config(caller: str, order: int, total: int, profile: str) -> str:
    cap = 2 * (total >> 20) + 16  # compaction and promotion need room beside the tenant
    home = 1 if caller == "promotion" else 0
    off = "\n".join(f"[workloads.{w}]\nenabled = false" for w in
                    ("move", "demotion", "promotion", "compaction"))
    return (f'[[nodes]]\nname = "dram"\ncapacity = "{cap}M"\ndemotion_target = 1\n'
            f'[[nodes]]\nname = "far"\ncapacity = "{cap}M"\n'
            f'[[tenants]]\nname = "bench"\nsize = "{total >> 20}M"\norder = {order}\n'
            f'home_node = {home}\naccess_rate = 0\n{off}\n[dma]\nprofile = "{profile}"\n')


@asynccontextmanager
async def _running(sys: System, spec: MigratorSpec, variant: str = "v6"):
    """``sys`` with its DMA channels running and ``spec``'s migrator registered
    (None for ``none``; dcbm as ``variant``); yields (the batch records as they
    post, the migrator) and cancels the channels on the way out."""
    records: list[BatchRecords] = []
    sys.engine.subscribe(records.append)
    migrator = make_migrator(spec, sys.dma, variant)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        if migrator is not None:
            sys.engine.registry.register(migrator)
        yield records, migrator
        nursery.cancel_scope.cancel()


async def _run_caller(sys: System, caller: str) -> None:
    tenant = sys.tenants[0]
    if caller == "promotion":
        sys.machine.accessed[:] = True  # every folio hot: one hinting fault each
        await promote_node(sys, 1, 1.0, max_calls=1 << 40)
    elif caller == "demotion":
        sys.machine.accessed[:] = False
        await demote_node(sys, 0)
    elif caller == "compaction":
        await compact_node(sys, 0, MigrateMode.MIGRATE_SYNC)
    elif caller == "kcompactd":
        await compact_node(sys, 0, MigrateMode.MIGRATE_SYNC_LIGHT, 1.0, HPAGE_PMD_ORDER)
    elif caller == "direct_compaction":
        await direct_compact(sys, 0, HPAGE_PMD_ORDER)
    elif caller == "move_pages":
        await move_tenant(sys, tenant, 1)
    elif caller == "damon":
        sys.machine.accessed[:] = False
        node = sys.machine.memory.nodes[0]
        await damon_migrate(sys, node.start_pfn, node.end_pfn, 1, hot=False)


async def caller_row(opts: BenchOptions, caller: str, order: int, bound: int, spec,
                     batch_copy: str = "gated") -> BenchRow | None:
    """One caller's pass on a fresh System; None when it moved nothing
    (compaction skips pageblock-order folios)."""
    cfg = load_config(text=_config(caller, order, opts.total, opts.profile_name))
    clock = VirtualClock() if opts.clock == "virtual" else Clock()
    sys = System(cfg, clock)
    sys.callers[caller].list_pages = bound
    sys.engine.batch_copy = batch_copy
    async with _running(sys, spec, opts.variant) as (records, migrator):
        t0 = trio.current_time()
        await _run_caller(sys, caller)
        seconds = trio.current_time() - t0
        if migrator is not None:
            await sys.engine.registry.unregister(migrator)
    st = sys.engine.statistics()
    nbytes = st.vmstat["pgmigrate_success"] * PAGE_SIZE
    if not nbytes or seconds <= 0:
        return None
    verified = False
    if opts.verify:
        report = sys.machine.check_integrity()
        if not report.ok:
            raise RuntimeError(f"integrity check failed after {caller} {spec}: {report}")
        verified = True
    fallbacks = sum(st.fallbacks.values())
    calls = sum(st.calls.values())
    return BenchRow(
        migrator=spec.name, param=spec.param, order=order,
        folio_bytes=PAGE_SIZE << order, batch_pages=sys.engine.nr_max_batched_migration,
        total_bytes=nbytes, seconds=seconds, gbps=nbytes / seconds / 1e9,
        **latency_summary(records), verified=verified,
        extra={"caller": caller, "mode": MODES[caller], "list_pages": bound,
               "kernel_list_pages": KERNEL_LIST_PAGES[caller], "batch_copy": batch_copy,
               "variant": getattr(migrator, "variant", None),
               "calls": calls, "batches": sum(len(r) for r in records),
               "cpu_copy_seconds": float(sum(st.cpu_copy_seconds.values())),
               "fallback_folios": fallbacks})


async def callers(opts: BenchOptions) -> BenchReport:
    rows: list[BenchRow] = []
    skipped = set()
    for order in opts.orders:
        for caller in opts.caller_names or CALLERS:
            for bound in opts.list_pages or DEFAULT_LIST_PAGES:
                for mode in opts.batch_copy or ["gated"]:
                    base = None
                    for spec in opts.migrators:
                        opts.progress(f"callers: order {order} {caller} list {bound} "
                                      f"{mode} {spec}")
                        row = await caller_row(opts, caller, order, bound, spec, mode)
                        if row is None:
                            skipped.add((caller, order))
                            continue
                        if spec.name == "none":
                            base = row.extra["cpu_copy_seconds"]
                        row.extra["cpu_saved_seconds"] = (
                            None if base is None else base - row.extra["cpu_copy_seconds"])
                        rows.append(row)
    report = BenchReport("callers", opts.clock, opts.profile_name, rows)
    for caller, order in sorted(skipped):
        report.notes.append(f"{caller} moved nothing at order {order} (it skips such folios)")
    _gain_note(report)
    return report


def _gain_note(report: BenchReport) -> None:
    """dcbm's gain over none per caller and bound, in one line per caller."""
    by = {}
    for r in report.rows:
        key = (r.extra["caller"], r.order, r.extra["batch_copy"], r.extra["list_pages"])
        by.setdefault(key, {})[f"{r.migrator}:{r.param}" if r.param else r.migrator] = r.gbps
    lines = {}
    for (caller, order, mode, bound), g in sorted(by.items()):
        if "none" not in g:
            continue
        gains = ", ".join(f"{m} {v / g['none']:.2f}x" for m, v in g.items() if m != "none")
        if gains:
            lines.setdefault((caller, order, mode), []).append(f"{bound}: {gains}")
    for (caller, order, mode), parts in lines.items():
        report.notes.append(f"{caller} order {order} ({mode}) vs none, by list bound: "
                            + "; ".join(parts))


def parse_callers(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if c not in CALLERS]
    if bad or not names:
        raise ValueError(f"unknown caller {bad[0] if bad else text!r} "
                         f"(expected some of {', '.join(CALLERS)})")
    return names


def parse_batch_copy(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names or any(c not in ("gated", "always") for c in names):
        raise ValueError(f"--batch-copy: expected gated and/or always, got {text!r}")
    return names


async def iommu_merge(opts: BenchOptions) -> BenchReport:
    """How often real layouts make ``dma_map_sgtable()`` merge a batch's two
    sides unevenly (v6 dcbm then falls back with -EINVAL), and how far the
    IOMMU merges them (``entries_per_segment``: folios per mapped segment): a
    move_pages() of the whole tenant with dcbm on a fresh node, after a long
    run of partial moves (every ``round`` moves a random 30% of the folios to
    the other node), and after compacting the node that long run left.
    Always v6: the newest dcbm maps folio by folio (``dma._sgmap``)."""
    from ._options import MigratorSpec
    rows = []
    for order in opts.orders:
        for spec in [s for s in opts.migrators if s.name == "dcbm"] or [MigratorSpec("dcbm", 4)]:
            cfg = load_config(text=_config("move_pages", order, opts.total, opts.profile_name))
            sys = System(cfg, VirtualClock() if opts.clock == "virtual" else Clock())
            tenant = sys.tenants[0]
            migrator = make_migrator(spec, sys.dma)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sys.dma.run)
                sys.engine.registry.register(migrator)
                for phase, rounds in (("fresh", 0), ("long run", 32), ("compacted", -1)):
                    opts.progress(f"iommu-merge: order {order} {spec} {phase}")
                    if rounds > 0:
                        for k in range(rounds):
                            await move_tenant(sys, tenant, (k + 1) % 2, 0.3)
                    elif rounds < 0:
                        for node in sys.machine.memory.nodes:
                            await compact_node(sys, node.nid, MigrateMode.MIGRATE_SYNC)
                    mism0, batches0 = sys.dma.sg_mismatches, sys.engine.statistics().batches
                    ents0, segs0 = sys.dma.sg_entries, sys.dma.sg_segments
                    where = int(sys.machine.memory.nid_of[tenant.pte_pfn[0]])
                    t0 = trio.current_time()
                    await move_tenant(sys, tenant, 1 - where)
                    seconds = trio.current_time() - t0
                    batches = sum(sys.engine.statistics().batches.values()) - sum(batches0.values())
                    mism = sys.dma.sg_mismatches - mism0
                    nbytes = tenant.nr_pages * PAGE_SIZE
                    rows.append(BenchRow(
                        spec.name, spec.param, order, PAGE_SIZE << order, 512, nbytes, seconds,
                        nbytes / seconds / 1e9, None, None, None, False,
                        extra={"layout": phase, "batches": batches, "einval_batches": mism,
                               "einval_pct": 100.0 * mism / max(batches, 1),
                               "entries_per_segment": (sys.dma.sg_entries - ents0) / max(
                                   1, sys.dma.sg_segments - segs0)}))
                await sys.engine.registry.unregister(migrator)
                nursery.cancel_scope.cancel()
    return BenchReport("iommu-merge", opts.clock, opts.profile_name, rows)


def _tenants_config(k: int, order: int, total: int, profile: str) -> str:
    base = _config("move_pages", order, total, profile)
    head, _, rest = base.partition("[[tenants]]")
    rest = rest.split("[workloads.move]", 1)
    each = total // k
    tenants = "".join(f'[[tenants]]\nname = "t{i}"\nsize = "{each >> 20}M"\norder = {order}\n'
                      f'access_rate = 0\n' for i in range(k))
    return head + tenants + "[workloads.move]" + rest[1]


async def shared_channels(opts: BenchOptions) -> BenchReport:
    """``--concurrency`` move_pages() callers at once, each moving its own
    tenant (``--total`` shared among them): aggregate throughput, first-folio
    latency, and what the channels did - claimed exclusively (PTDMA, DSA:
    a batch takes what is free, none free is -EBUSY and the CPU copies it) or
    shared through ``dma_find_channel()`` (SDXI: every caller's descriptors
    queue on one channel)."""
    rows = []
    for order in opts.orders:
        for k in opts.list_pages or [1, 2, 4]:
            for spec in opts.migrators:
                opts.progress(f"shared-channels: order {order} {k} callers {spec}")
                sys = System(load_config(text=_tenants_config(k, order, opts.total,
                                                              opts.profile_name)),
                             VirtualClock() if opts.clock == "virtual" else Clock())
                async with _running(sys, spec) as (records, migrator):
                    t0 = trio.current_time()
                    async with trio.open_nursery() as callers_:
                        for t in sys.tenants:
                            callers_.start_soon(move_tenant, sys, t, 1)
                    seconds = trio.current_time() - t0
                st = sys.engine.statistics()
                nbytes = st.vmstat["pgmigrate_success"] * PAGE_SIZE
                rows.append(BenchRow(
                    spec.name, spec.param, order, PAGE_SIZE << order, 512, nbytes, seconds,
                    nbytes / seconds / 1e9, **latency_summary(records), verified=False,
                    extra={"concurrency": k, "batches_refused": sys.dma.batches_refused,
                           "fallback_folios": sum(st.fallbacks.values()),
                           "channels_per_batch": (sum(migrator.channels_claimed) / max(
                               1, len(migrator.channels_claimed)))
                           if hasattr(migrator, "channels_claimed") else 0}))
    return BenchReport("shared-channels", opts.clock, opts.profile_name, rows)
