"""``migd soak``: hours of random work, knob flips and faults, with nothing lost.

The daemon's machinery runs as ``migd run`` runs it (:func:`system_running`:
real clock, real bytes, the real FUSE tree, the daemon's own shutdown), with
the workloads of every reason at a fast pace over a tenant of each folio order
0..9.  Around it:

* a flipper process writes random knob values through the mounted tree (the
  knob table's soak values: migrator switches, channel and thread counts,
  batch bounds, reason masks, counter resets) and, with ``faults``, arms
  random ``fail_*`` points;
* with ``faults``, a pinner task holds extra references on random mapped
  folios for a while, as ``pin_user_pages()`` would (they must fail with
  -EAGAIN and stay intact);
* a reader *process* ``cat``\\ s random attributes and reports each latency (a
  thread of ours would measure our own GIL, not the daemon);
* every ``check_every`` seconds every page is verified and every invariant
  checked (every virtual page maps one folio, allocator accounting,
  pgmigrate_success + pgmigrate_fail + in flight == attempted, exported
  counters monotonic), and RSS is sampled.

Violations are recorded, not raised: the summary says what was lost, corrupted
or violated, and any of it fails the run.  The knob and fault sequence is a
function of the seed (the interleaving with migrations is not).
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import trio

from ..daemon import System, load_config, soak_writes, system_running
from ..faults import FaultInjector
from ..metrics import MigdCollector
from ..sysfs import clear_stale_mount
from ._children import CatSampler, Flipper

#: A tenant of each folio order 0..9 (order 3 mlocked), two nodes, dcbm active.
SOAK_CONFIG = """
[daemon]
log_format = "json"
[[nodes]]
name = "dram"
capacity = "256M"
demotion_target = 1
[[nodes]]
name = "far"
capacity = "256M"
""" + "".join(f"""[[tenants]]
name = "o{order}"
size = "16M"
order = {order}
access_rate = {5000 if order < 4 else 2000}
write_fraction = {0.3 if order % 2 == 0 else 0.1}
{"mlocked = true" if order == 3 else ""}
""" for order in range(10)) + """[migrator]
active = "dcbm"
[dma]
profile = "zen3-ptdma"
[workloads.move]
interval = 0.05
fraction = 0.3
[workloads.demotion]
interval = 0.07
fraction = 0.3
[workloads.promotion]
interval = 0.06
fraction = 0.5
[workloads.compaction]
interval = 0.3
fraction = 0.2
"""

@dataclass(frozen=True)
class SoakOptions:
    duration: float
    faults: bool = False
    seed: int = 0
    check_every: float = 3.0
    mount: str | None = None
    config_text: str | None = None
    progress: Callable[[str], None] = lambda msg: None


@dataclass
class SoakSummary:
    """The run's findings; ``ok`` is False on any loss, corruption or violation."""

    duration_s: float
    seed: int
    faults: bool
    lost_pages: int = 0
    corrupt_pages: int = 0
    invariant_violations: int = 0
    violations: list[str] = field(default_factory=list)
    faults_injected: dict[str, int] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)
    migrated_bytes: int = 0
    migrated_pages_by_reason: dict[str, int] = field(default_factory=dict)
    #: Faults that mapped a zeroed folio, by how (dma, cpu, pool); every such
    #: page is checked to read zero until written.
    cleared_by_how: dict[str, int] = field(default_factory=dict)
    prezero_pool_hits: int = 0
    knob_writes: int = 0
    knob_errors: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    rss_mb_after_warmup: float = 0.0
    rss_mb_end: float = 0.0
    rss_growth_pct: float = 0.0
    cat_reads: int = 0
    cat_p99_ms: float = 0.0
    stopped_by_signal: bool = False

    @property
    def ok(self) -> bool:
        return not (self.lost_pages or self.corrupt_pages or self.invariant_violations)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _pinner(sys: System, rng: np.random.Generator, pinned: dict[str, int]) -> None:
    """``pin_user_pages()`` on random mapped folios, released after a while.

    A pinned folio holds an extra reference, so migration must fail it with
    -EAGAIN and leave it intact.  Folios under a migration entry are skipped
    (GUP would wait for the migration).
    """
    mem = sys.machine.memory
    held: list[tuple[float, np.ndarray]] = []
    try:
        while True:
            await trio.sleep(float(rng.uniform(0.01, 0.1)))
            now = trio.current_time()
            for t_release, heads in [h for h in held if h[0] <= now]:
                mem.refcount[heads] -= 1
                held.remove((t_release, heads))
            t = sys.tenants[int(rng.integers(len(sys.tenants)))]
            v = rng.integers(t.nr_pages, size=int(rng.integers(1, 64)))
            v = v[~t.migration_entry[v]]
            heads = np.unique(mem.page_folio(t.pte_pfn[v]))
            mem.refcount[heads] += 1
            held.append((now + float(rng.uniform(0.05, 1.0)), heads))
            pinned["pin_user_pages"] += int(heads.size)
    finally:
        for _, heads in held:
            mem.refcount[heads] -= 1


def _exported_counters(sys: System) -> dict:
    """Every counter and histogram sample the collector exports, by name and labels
    (from the collector itself: a text scrape and its parsing add nothing here)."""
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for fam in MigdCollector(sys, "soak").collect()
            if fam.type in ("counter", "histogram") for smp in fam.samples}


def _check(sys: System, summary: SoakSummary, last: dict, final: bool = False) -> dict:
    """Every page and every invariant; returns the counters for the next check."""
    eng = sys.engine
    report = sys.machine.check_integrity(migrating=not final)
    summary.checks += 1
    lost = report.unmapped_vpages + report.shared_pfns + report.misattributed_folios
    corrupt = report.corrupt_pages + sum(t.statistics().corrupt_reads for t in sys.tenants)
    summary.lost_pages = max(summary.lost_pages, lost)
    summary.corrupt_pages = max(summary.corrupt_pages, corrupt)

    def violation(what: str) -> None:
        summary.invariant_violations += 1
        if len(summary.violations) < 20:
            when = "final check" if final else f"check {summary.checks}"
            summary.violations.append(f"{when}: {what}")

    if report.accounting_errors:
        violation(f"allocator free + used != capacity on {report.accounting_errors} node(s)")
    if report.stale_migration_entries or report.stale_isolated:
        violation(f"left behind: {report.stale_migration_entries} migration entries, "
                  f"{report.stale_isolated} isolated folios")
    v = eng.statistics().vmstat
    done = v["pgmigrate_success"] + v["pgmigrate_fail"]
    if done + eng.pages_untried + eng.pages_in_flight != eng.pages_attempted:
        violation(f"pgmigrate_success + pgmigrate_fail = {done}, untried "
                  f"{eng.pages_untried}, in flight {eng.pages_in_flight}, "
                  f"attempted {eng.pages_attempted}")
    now = _exported_counters(sys)
    back = [k[0] for k, val in last.items() if now.get(k, val) < val]
    if back:
        violation(f"exported counters went backwards: {back[:3]}")
    return now


async def _soak(opts: SoakOptions, summary: SoakSummary,
                migrator: Callable[[System], object] | None) -> None:
    cfg = load_config(text=opts.config_text or SOAK_CONFIG)
    cfg.daemon["seed"] = opts.seed
    sys = System(cfg)
    if migrator is not None:  # tests: a migrator with a planted bug
        sys.migrators[cfg.migrator["active"]] = migrator(sys)
    if cfg.migrator["active"] != "none":
        await sys.set_migrator(cfg.migrator["active"])
    mount = opts.mount or tempfile.mkdtemp(prefix="migd-soak-")
    rng = np.random.default_rng(opts.seed)
    pinned = {"pin_user_pages": 0}
    warmup = min(0.2 * opts.duration, 120.0)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        clear_stale_mount(mount)
        flipper = cat = None
        t0 = time.monotonic()
        try:
            async with system_running(sys, mount) as nursery:
                if opts.faults:
                    nursery.start_soon(_pinner, sys, rng, pinned)
                # File I/O on the mount never runs in this process (_CHILD).
                cat = CatSampler(mount, opts.seed)
                # a descriptor error on an engine that does not report it
                # corrupts by design (README): not armed there
                flipper = Flipper(mount, opts.seed, opts.faults, summary,
                                  soak_writes(sys, faults=False),
                                  FaultInjector.points_for(sys.profile.dma.reports_errors))

                async def stop_on_signal(scope: trio.CancelScope) -> None:
                    async for signum in signals:
                        if signum != signal.SIGHUP:
                            summary.stopped_by_signal = True
                            scope.cancel()
                            return
                last = _exported_counters(sys)
                t0 = time.monotonic()
                with trio.CancelScope() as running:
                    nursery.start_soon(stop_on_signal, running)
                    while (elapsed := time.monotonic() - t0) < opts.duration:
                        await trio.sleep(min(opts.check_every, opts.duration - elapsed))
                        last = _check(sys, summary, last)
                        if time.monotonic() - t0 < warmup or not summary.rss_mb_after_warmup:
                            summary.rss_mb_after_warmup = _rss_mb()
                        opts.progress(
                            f"soak {time.monotonic() - t0:6.0f}/{opts.duration:.0f}s  "
                            f"checks {summary.checks}  lost {summary.lost_pages}  corrupt "
                            f"{summary.corrupt_pages}  violations "
                            f"{summary.invariant_violations}  rss {_rss_mb():.0f} MB  "
                            f"cat p99 {cat.p99_ms():.1f} ms")
                # Migration stops first (as the daemon's shutdown stops it): a
                # knob write in flight may wait on a batch held by a hung DMA
                # descriptor, up to a DMA migrator's 10 s timeout, and a child in that
                # write cannot die before it is answered.  Then readers and
                # writers stop, before the tree is unmounted.
                sys.engine.stop()
                await trio.to_thread.run_sync(flipper.close)
                await trio.to_thread.run_sync(cat.close)
                for point in FaultInjector.POINTS:  # batches in flight end without new faults
                    sys.faults[point].set(probability=0)
        finally:
            for child in (flipper, cat):
                if child is not None:
                    child.close()
    summary.duration_s = round(time.monotonic() - t0, 1)
    _check(sys, summary, last, final=True)
    s = sys.engine.statistics()
    summary.faults_injected = {**sys.faults.injected(), **pinned}
    summary.fallbacks = dict(s.fallbacks)
    summary.migrated_bytes = int(sum(s.bytes_migrated.values()))
    summary.migrated_pages_by_reason = {
        r: d["pgmigrate_success"] for r, d in s.vmstat_by_reason.items()
        if d["pgmigrate_success"]}
    summary.cleared_by_how = {how: n for how, n in sys.faults_by_how.items() if n}
    summary.prezero_pool_hits = int(sys.prezero.hits.sum())
    summary.rss_mb_end = _rss_mb()
    base = summary.rss_mb_after_warmup or summary.rss_mb_end
    summary.rss_growth_pct = round(100 * (summary.rss_mb_end - base) / base, 2)
    if cat is not None:
        summary.cat_reads = cat.reads
        summary.cat_p99_ms = cat.p99_ms()


def run_soak(opts: SoakOptions,
             migrator: Callable[[System], object] | None = None) -> SoakSummary:
    """Run a soak; ``migrator`` replaces the configured active migrator (tests
    plant bugs with it)."""
    summary = SoakSummary(opts.duration, opts.seed, opts.faults)
    trio.run(_soak, opts, summary, migrator)
    return summary


def summary_json(summary: SoakSummary) -> str:
    return json.dumps({**asdict(summary), "ok": summary.ok}, indent=1)
