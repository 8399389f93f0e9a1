"""The bench experiments: each builds a machine, migrates, and measures.

Real clock: real bytes move and every number is wall time measured around the
engine; the ``memcpy`` row is this machine's copy limit measured in the same
run, so ratios stay meaningful on a shared, noisy host.  Virtual clock: the same
engine under MockClock with one word per page; times are the profile's model.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

from ..dma import DmaDevice
from ..hw import Clock, VirtualClock, get_profile, mock_clock
from ..migrate import BatchRecords, MigrationEngine, warm_up
from ..mm import PAGE_SIZE, Machine, NodeSpec, TenantSpec
from ..offload import (
    DCBM_MAX_CHANNELS,
    MTCOPY_MAX_THREADS,
    DcbmMigrator,
    Migrator,
    MtcopyMigrator,
)
from ._options import MigratorSpec
from ._report import BenchReport, BenchRow

#: Migrators the bench can run, with their parameter range.
AVAILABLE_MIGRATORS: dict[str, tuple[int, int]] = {
    "cpu": (0, 0), "mtcopy": (1, MTCOPY_MAX_THREADS), "dcbm": (1, DCBM_MAX_CHANNELS)}


def make_migrator(spec: MigratorSpec, dma: DmaDevice) -> Migrator | None:
    """A fresh migrator for ``spec``; None for the CPU default."""
    if spec.name == "cpu":
        return None
    if spec.name == "mtcopy":
        return MtcopyMigrator(spec.param)
    if spec.name == "dcbm":
        return DcbmMigrator(dma, spec.param)
    raise ValueError(f"unknown migrator {spec.name!r}")


@dataclass
class BenchOptions:
    clock: str = "real"
    profile: str | None = None  # default: native (real), zen3-ptdma (virtual)
    orders: list[int] = field(default_factory=lambda: [0, 2, 4, 6, 8, 9])
    migrators: list[MigratorSpec] = field(default_factory=lambda: [MigratorSpec("cpu")])
    total: int = 1 << 30
    batch_pages: list[int] | None = None
    verify: bool = False
    repeat: int = 1
    progress: Callable[[str], None] = lambda msg: None
    calibration: Path | None = None  # seed: directory of the calibration CSVs
    duration: float = 10.0  # cat-latency: seconds of reading
    budgets_us: list[int] | None = None  # latency-budget: the budgets

    @property
    def profile_name(self) -> str:
        return self.profile or ("native" if self.clock == "real" else "zen3-ptdma")


def run(experiment: str, opts: BenchOptions) -> BenchReport:
    """Run ``experiment`` to completion on the chosen clock."""
    fn = EXPERIMENTS[experiment]
    get_profile(opts.profile_name)  # fail early on a bad name
    opts.progress("warming up the compiled paths")
    trio.run(warm_up)
    # Everything imported so far (numba, llvmlite, trio) lives for the whole
    # run; without this the cyclic GC rescans it ~100 times a second, costing
    # ~10% of a real-clock run.
    gc.freeze()
    if opts.clock == "virtual":
        return trio.run(fn, opts, clock=mock_clock())
    return trio.run(fn, opts)


class _Rig:
    """A two-node machine with one tenant of ``total`` bytes on node 0."""

    def __init__(self, opts: BenchOptions, order: int) -> None:
        self.opts = opts
        self.clock = VirtualClock() if opts.clock == "virtual" else Clock()
        slack = 8 << 20
        cap = -(-(opts.total + slack) // (2 << 20)) * (2 << 20)
        self.machine = Machine([NodeSpec(cap, "dram", demotion_target=1), NodeSpec(cap, "far")],
                               words_per_page=1 if self.clock.virtual else None)
        self.tenant = self.machine.add_tenant(TenantSpec("bench", opts.total, order=order))
        self.node = 0
        self.profile = get_profile(opts.profile_name)

    async def migrate(self, spec: MigratorSpec, batch_pages: int, *, budget_us: int = 0,
                      auto: bool = False, passes: int = 1,
                      between: Callable[[MigrationEngine, DmaDevice, int], None] | None = None
                      ) -> BenchRow:
        """move_pages() the whole tenant to the other node, measured.

        ``budget_us``: the engine's latency budget; ``auto``: the migrator's
        automatic CPU/offload choice; ``passes``: migrations back and forth on
        one engine (the policies learn), the last one timed; ``between(engine,
        dma, pass)`` runs before each pass (tests change the hardware there).
        """
        engine = MigrationEngine(self.machine, self.clock, self.profile)
        engine.nr_max_batched_migration = batch_pages
        engine.max_inaccessible_us = budget_us
        dma = DmaDevice(0, self.machine.memory, self.clock, self.profile.dma, engine.faults)
        migrator = make_migrator(spec, dma)
        if migrator is not None:
            migrator.auto = auto
            engine.registry.register(migrator)
        records: list[BatchRecords] = []
        engine.subscribe(records.append)
        vpages = np.arange(0, self.tenant.nr_pages, 1 << self.tenant.spec.order)  # per folio
        pass_seconds = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            for p in range(passes):
                if between is not None:
                    between(engine, dma, p)
                if p == passes - 1:
                    timed_from = len(records)
                target = 1 - self.node
                t0 = trio.current_time()
                result = await engine.move_pages(self.tenant, vpages, target)
                pass_seconds.append(trio.current_time() - t0)
                if result.failed.size:
                    raise RuntimeError(f"{result.failed.size} folios failed to migrate")
                self.node = target
            nursery.cancel_scope.cancel()
        if migrator is not None:
            await engine.registry.unregister(migrator)
        verified = False
        if self.opts.verify:
            report = self.machine.check_integrity()
            if not report.ok:
                raise RuntimeError(f"integrity check failed after {spec}: {report}")
            verified = True
        timed = records[timed_from:]
        ff = np.concatenate([r.first_folio_seconds for r in timed])
        ff = ff[ff == ff]
        inacc = np.concatenate([r.inaccessible_seconds for r in timed])
        total, seconds = self.opts.total, pass_seconds[-1]
        extra: dict = {"batches": sum(len(r) for r in timed)}
        if budget_us:
            longest = np.concatenate([r.longest_inaccessible() for r in records])
            extra.update(budget_us=budget_us,
                         over_budget_pct=100.0 * float((longest > budget_us * 1e-6).mean()))
        if passes > 1:
            extra["first_pass_gbps"] = total / pass_seconds[0] / 1e9
        if auto and migrator is not None:
            extra["offloaded_pct"] = 100.0 * float(
                sum(int(r.nr_offloaded.sum()) - int(r.nr_fallback.sum()) for r in timed)
                / max(1, sum(int(r.nr_folios.sum()) for r in timed)))
        return BenchRow(
            migrator=spec.name, param=spec.param, order=self.tenant.spec.order,
            folio_bytes=PAGE_SIZE << self.tenant.spec.order, batch_pages=batch_pages,
            total_bytes=total, seconds=seconds, gbps=total / seconds / 1e9,
            first_folio_us=float(np.median(ff)) * 1e6 if ff.size else None,
            inaccessible_us_p50=float(np.percentile(inacc, 50)) * 1e6 if inacc.size else None,
            inaccessible_us_p99=float(np.percentile(inacc, 99)) * 1e6 if inacc.size else None,
            verified=verified, extra=extra)

    def memcpy(self) -> BenchRow:
        """This machine's copy limit: ``total`` bytes in one copy, best of 3."""
        total = self.opts.total
        if self.clock.virtual:
            gbps = self.profile.cpu.copy_gbps
            seconds = total / gbps / 1e9
        else:
            mem = self.machine.memory
            src = mem.nodes[0].start_pfn
            dst = mem.nodes[1].start_pfn
            n = total // PAGE_SIZE
            seconds = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                np.copyto(mem.arena[dst:dst + n], mem.arena[src:src + n])
                seconds = min(seconds, time.perf_counter() - t)
            gbps = total / seconds / 1e9
        return BenchRow("memcpy", 0, None, total, 0, total, seconds, gbps, None, None, None,
                        False)


def _median_row(rows: list[BenchRow]) -> BenchRow:
    rows = sorted(rows, key=lambda r: r.seconds)
    return rows[len(rows) // 2]


async def memcpy(opts: BenchOptions) -> BenchReport:
    rig = _Rig(opts, 9)
    return BenchReport("memcpy", opts.clock, opts.profile_name, [rig.memcpy()])


async def throughput(opts: BenchOptions) -> BenchReport:
    """Folio order x migrator: GB/s, first-folio latency, inaccessible time."""
    rows: list[BenchRow] = []
    notes = []
    batch_list = opts.batch_pages or [512]
    for order in opts.orders:
        opts.progress(f"order {order}: building a {opts.total >> 20} MiB tenant")
        rig = _Rig(opts, order)
        if not rows and opts.clock == "real":
            rows.append(rig.memcpy())
            notes.append("real clock: copies use non-temporal stores above 1 MiB "
                         "(glibc x86_non_temporal_threshold), the memcpy row too")
        for spec in opts.migrators:
            for batch_pages in batch_list:
                runs = []
                for i in range(opts.repeat):
                    opts.progress(f"order {order} {spec} batch {batch_pages}: run {i + 1}")
                    runs.append(await rig.migrate(spec, batch_pages))
                rows.append(_median_row(runs))
        del rig
    return BenchReport("throughput", opts.clock, opts.profile_name, rows, notes)


async def batch_sweep(opts: BenchOptions) -> BenchReport:
    """nr_max_batched_migration sweep: throughput and first-folio latency."""
    if not opts.batch_pages:
        opts.batch_pages = [512 << i for i in range(10)]
    report = await throughput(opts)
    report.experiment = "batch-sweep"
    return report


async def seed(opts: BenchOptions) -> BenchReport:
    """Every published cell of the calibration set, beside its published value."""
    from . import _seed

    cells = _seed.load_cells(opts.calibration)
    rows: list[BenchRow] = []
    for order in sorted({c.order for c in cells}):
        rig = _Rig(opts, order)
        mine = [c for c in cells if c.order == order]
        for k, cell in enumerate(mine):
            opts.progress(f"seed: order {order}, cell {k + 1}/{len(mine)} ({cell.source})")
            rows.append(await _seed.run_cell(rig, cell, make_migrator))
        del rig
    report = BenchReport("seed", opts.clock, opts.profile_name, rows)
    _seed.summarise(report)
    return report


async def cat_latency(opts: BenchOptions) -> BenchReport:
    """Latency of reading the real control tree while migrating at full speed."""
    from ._catlat import cat_latency as run_it

    return await run_it(opts)


async def scrape(opts: BenchOptions) -> BenchReport:
    """Time of a full /metrics scrape with every series present."""
    from ._scrape import scrape as run_it

    return await run_it(opts)


async def latency_budget(opts: BenchOptions) -> BenchReport:
    """The adaptive batch bound under a latency budget, against fixed bounds."""
    from ._policies import latency_budget as run_it

    return await run_it(opts)


async def auto_choice(opts: BenchOptions) -> BenchReport:
    """The automatic CPU/offload choice, against the CPU and always offloading."""
    from ._policies import auto_choice as run_it

    return await run_it(opts)


EXPERIMENTS = {"memcpy": memcpy, "throughput": throughput, "batch-sweep": batch_sweep,
               "seed": seed, "cat-latency": cat_latency, "scrape": scrape,
               "latency-budget": latency_budget, "auto-choice": auto_choice}
DEFAULT_CLOCK = {"seed": "virtual", "latency-budget": "virtual", "auto-choice": "virtual"}
