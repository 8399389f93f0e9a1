"""The bench rig: options, a two-node machine, one measured move_pages(), a row.

Every experiment (``_experiments``, ``_policies``, ``_seed``) measures the same
way: build an engine on the rig's machine, register the migrator, migrate,
summarise the batch records into percentiles.  That is written here once, in a
leaf module that imports no other experiment module, so the experiments import
the rig and never each other (the policies and the experiments used to import
each other through four lazy trampolines, and ``seed`` repeated the set-up and
the percentile code).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trio

from ..dma import DmaDevice
from ..hw import Clock, VirtualClock, get_profile
from ..migrate import BatchRecords, MigrationEngine
from ..mm import PAGE_SIZE, Machine, NodeSpec, TenantSpec
from ..offload import CATALOGUE, Migrator
from ._options import MigratorSpec
from ._report import BenchRow

#: The untimed move that puts a partly moved tenant back uses the largest bound.
_RESTORE_BATCH_PAGES = 262144


def make_migrator(spec: MigratorSpec, dma: DmaDevice, variant: str = "v6") -> Migrator | None:
    """A fresh migrator for ``spec``; None for the vanilla kernel (``none``).
    ``variant``: dcbm's (``--variant``; v6, the published tables' semantics,
    unless asked), for a migrator that has variants."""
    entry = CATALOGUE.get(spec.name)
    if entry is None:
        raise ValueError(f"unknown migrator {spec.name!r}")
    if entry.make is None:
        return None
    migrator = entry.make(dma, spec.param)
    if hasattr(migrator, "set_variant"):
        migrator.set_variant(variant)
    return migrator


@dataclass
class BenchOptions:
    """What an experiment runs; the CLI fills it from the experiment's declared options."""

    clock: str = "real"
    profile: str | None = None  # default: native (real), zen3-ptdma (virtual)
    orders: list[int] = field(default_factory=lambda: [0, 2, 4, 6, 8, 9])
    migrators: list[MigratorSpec] = field(default_factory=lambda: [MigratorSpec("none")])
    total: int = 1 << 30
    batch_pages: list[int] | None = None
    verify: bool = False
    repeat: int = 1
    progress: Callable[[str], None] = lambda msg: None
    calibration: Path | None = None  # seed: directory of the calibration CSVs
    duration: float = 10.0  # cat-latency: seconds of reading, the whole run
    readers: int = 1  # cat-latency: reader processes
    scrape_hz: float = 0.0  # cat-latency: /metrics scrapes a second (0: none)
    budgets_us: list[int] | None = None  # latency-budget: the budgets
    variant: str = "v6"  # dcbm's iteration (--variant)
    callers: int = 1  # throughput: concurrent move_pages() callers (--callers)
    caller_names: list[str] | None = None  # callers: which callers (default: all)
    list_pages: list[int] | None = None  # callers: the list bounds
    batch_copy: list[str] | None = None  # callers: gated and/or always

    @property
    def profile_name(self) -> str:
        return self.profile or ("native" if self.clock == "real" else "zen3-ptdma")


def latency_summary(records: list[BatchRecords]) -> dict[str, float | None]:
    """Median first-folio latency and inaccessible-time p50/p99, in microseconds.

    Batches with no first folio (all failed) record NaN and are left out.
    """
    ff = np.concatenate([r.first_folio_seconds for r in records]) if records else np.empty(0)
    ff = ff[ff == ff]
    inacc = (np.concatenate([r.inaccessible_seconds for r in records]) if records
             else np.empty(0))
    return {
        "first_folio_us": float(np.median(ff)) * 1e6 if ff.size else None,
        "inaccessible_us_p50": float(np.percentile(inacc, 50)) * 1e6 if inacc.size else None,
        "inaccessible_us_p99": float(np.percentile(inacc, 99)) * 1e6 if inacc.size else None,
    }


class Rig:
    """A two-node machine with one tenant of ``total`` bytes on node 0.

    ``reuse``: the previous row's rig, done with: the new machine (fresh
    struct pages, buddy and page table, so rows measure exactly as on a new
    rig) takes over its page contents instead of allocating another ~2 x
    ``total`` bytes, which bounds a run's memory by one rig whatever the
    number of rows (a new arena per row, freed only when the cyclic GC got to
    the old engine, peaked at three arenas, 6.4 GB for ``--total 1G``).
    """

    def __init__(self, opts: BenchOptions, order: int, reuse: Rig | None = None) -> None:
        self.opts = opts
        self.clock = VirtualClock() if opts.clock == "virtual" else Clock()
        slack = 8 << 20
        cap = -(-(opts.total + slack) // (2 << 20)) * (2 << 20)
        arena = None
        if reuse is not None:
            arena = reuse.machine.memory.arena
            reuse.machine = reuse.tenant = None  # the old rig must not touch it again
        self.machine = Machine([NodeSpec(cap, "dram", demotion_target=1), NodeSpec(cap, "far")],
                               words_per_page=1 if self.clock.virtual else None, arena=arena)
        self.tenant = self.machine.add_tenant(TenantSpec("bench", opts.total, order=order))
        self.node = 0
        self.profile = get_profile(opts.profile_name)

    def _engine(self, batch_pages: int) -> MigrationEngine:
        engine = MigrationEngine(self.machine, self.clock, self.profile)
        engine.nr_max_batched_migration = batch_pages
        return engine

    async def migrate(self, spec: MigratorSpec, batch_pages: int, *, budget_us: int = 0,
                      auto: bool = False, passes: int = 1, pages_per_call: int = 0,
                      max_calls: int = 0,
                      between: Callable[[MigrationEngine, DmaDevice, int], None] | None = None,
                      callers: int = 1) -> BenchRow:
        """move_pages() the tenant to the other node, measured.

        ``budget_us``: the engine's latency budget; ``auto``: the migrator's
        automatic CPU/offload choice; ``passes``: migrations back and forth on
        one engine (the policies learn), the last one timed; ``pages_per_call``:
        cut each pass into calls of that many pages (0: one call of the whole
        tenant), at most ``max_calls`` of them (0: all) - a partial pass is put
        back untimed; ``between(engine, dma, pass)`` runs before each pass
        (tests change the hardware there); ``callers``: each call's pages cut
        into that many move_pages() calls in flight together (contention for
        the channels: the row says how many a batch got, ``channels_per_batch``,
        and how many batches were refused, ``batches_refused``).
        """
        engine = self._engine(batch_pages)
        engine.max_inaccessible_us = budget_us
        dma = DmaDevice(0, self.machine.memory, self.clock, self.profile.dma, engine.faults)
        migrator = make_migrator(spec, dma, self.opts.variant)
        if migrator is not None:
            migrator.auto = auto
            engine.registry.register(migrator)
        records: list[BatchRecords] = []
        engine.subscribe(records.append)
        nr_pages = self.tenant.nr_pages
        per_call = pages_per_call or nr_pages
        calls = nr_pages // per_call
        if max_calls:
            calls = min(calls, max_calls)
        partial = calls * per_call < nr_pages
        pass_seconds = []
        timed_from = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dma.run)
            for p in range(passes):
                if between is not None:
                    between(engine, dma, p)
                timed_from = len(records)
                target = 1 - self.node
                t0 = trio.current_time()
                wall0 = time.perf_counter()
                step = 1 << self.tenant.spec.order  # move_pages() takes one address per folio
                for c in range(calls):
                    vpages = np.arange(c * per_call, (c + 1) * per_call, step)
                    if callers == 1:
                        await self._move(engine, vpages, target)
                        continue
                    async with trio.open_nursery() as calls_nursery:
                        for part in np.array_split(vpages, callers):
                            calls_nursery.start_soon(self._move, engine, part, target)
                pass_seconds.append(trio.current_time() - t0)
                wall = time.perf_counter() - wall0
                if partial:
                    await self._engine(_RESTORE_BATCH_PAGES).move_pages(
                        self.tenant, np.arange(0, calls * per_call, step), self.node)
                else:
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
        nbytes, seconds = calls * per_call * PAGE_SIZE, pass_seconds[-1]
        extra: dict = {"batches": sum(len(r) for r in timed)}
        claimed = getattr(migrator, "channels_claimed", None)
        if claimed is not None:
            extra.update(variant=migrator.variant, callers=callers,
                         channels_per_batch=float(np.mean(claimed)) if claimed else 0.0,
                         batches_refused=dma.batches_refused)
        if budget_us:
            longest = np.concatenate([r.longest_inaccessible() for r in records])
            extra.update(budget_us=budget_us,
                         over_budget_pct=100.0 * float((longest > budget_us * 1e-6).mean()))
        if self.clock.virtual:
            # The simulator's own speed: the timed pass's simulated seconds per
            # second of wall time spent simulating it (process start, warm-up
            # and the tenant's set-up are not in it).
            extra.update(wall_seconds=wall, sim_speed=seconds / wall if wall > 0 else None)
        if passes > 1:
            extra["first_pass_gbps"] = nbytes / pass_seconds[0] / 1e9
        if auto and migrator is not None:
            extra["offloaded_pct"] = 100.0 * float(
                sum(int(r.nr_offloaded.sum()) - int(r.nr_fallback.sum()) for r in timed)
                / max(1, sum(int(r.nr_folios.sum()) for r in timed)))
        return BenchRow(
            migrator=spec.name, param=spec.param, order=self.tenant.spec.order,
            folio_bytes=PAGE_SIZE << self.tenant.spec.order, batch_pages=batch_pages,
            total_bytes=nbytes, seconds=seconds, gbps=nbytes / seconds / 1e9,
            **latency_summary(timed), verified=verified, extra=extra)

    async def _move(self, engine: MigrationEngine, vpages: np.ndarray, target: int) -> None:
        result = await engine.move_pages(self.tenant, vpages, target)
        if result.failed.size:
            raise RuntimeError(f"{result.failed.size} folios failed to migrate")

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
