"""``migd soak``: hours of random work, knob flips and faults, with nothing lost.

The daemon's machinery runs as ``migd run`` runs it (:func:`system_running`:
real clock, real bytes, the real FUSE tree, the daemon's own shutdown), with
the workloads of every reason at a fast pace over a tenant of each folio order
0..9.  Around it:

* a flipper thread writes random knob values through the mounted tree (the
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
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import trio

from ..daemon import soak_fault_settings, soak_writes
from ..daemon._config import load_config
from ..daemon._run import system_running
from ..daemon._system import System
from ..faults import FaultInjector
from ..metrics import MigdCollector
from ..sysfs import clear_stale_mount

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

#: ``cat`` latencies are kept as a histogram of 10 us bins up to 1 s (bounded
#: memory for runs of hours; the p99 is exact to 10 us).
_CAT_BIN_S = 1e-5
_CAT_BINS = 100_000

_READER = r"""
import os, random, sys, time
paths = sys.argv[2:]
rng = random.Random(int(sys.argv[1]))
out, parent = sys.stdout, os.getppid()
while os.getppid() == parent:  # ends with the soak, even a killed one
    p = rng.choice(paths)
    t = time.perf_counter()
    try:
        with open(p, "rb") as f:
            f.read()
    except OSError:
        continue
    out.write(f"{time.perf_counter() - t:.7f}\n")
    out.flush()
    time.sleep(0.005)
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


class _Flipper:
    """Random knob writes (and fault arming) through the mount, as ``echo`` does.

    A thread: its writes are served by the trio thread, which must stay free.
    """

    def __init__(self, mount: str, seed: int, faults: bool, summary: SoakSummary,
                 writes: list[tuple[str, tuple[str, ...]]]) -> None:
        self.mount, self.faults, self.summary = mount, faults, summary
        self.writes, self.fault_settings = writes, soak_fault_settings()
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-flipper", daemon=True)

    def _write(self, rel: str, value: str) -> None:
        try:
            with open(os.path.join(self.mount, rel), "w") as f:
                f.write(value + "\n")
            self.summary.knob_writes += 1
        except OSError as e:  # EBUSY: dcbm offloading while mtcopy is active, etc.
            err = e.strerror or str(e.errno)
            self.summary.knob_errors[err] = self.summary.knob_errors.get(err, 0) + 1

    def _run(self) -> None:
        rng = self.rng
        while not self.stop.wait(rng.uniform(0.02, 0.2)):
            rel, values = rng.choice(self.writes)
            self._write(rel, rng.choice(values))
            if self.faults and rng.random() < 0.3:
                base = f"kernel/debug/{rng.choice(FaultInjector.POINTS)}"
                if rng.random() < 0.5:
                    for attr, values in self.fault_settings.items():
                        self._write(f"{base}/{attr}", rng.choice(values))
                else:
                    self._write(f"{base}/probability", "0")


class _CatSampler:
    """A reader process timing ``open``/``read``/``close`` of random attributes."""

    def __init__(self, mount: str, seed: int) -> None:
        paths = []
        for dirpath, _, names in os.walk(mount):
            paths += [os.path.join(dirpath, n) for n in names if n != "trace_pipe"
                      and os.stat(os.path.join(dirpath, n)).st_mode & 0o444]
        self.hist = np.zeros(_CAT_BINS + 1, dtype=np.int64)
        self.proc = subprocess.Popen([sys.executable, "-c", _READER, str(seed), *paths],
                                     stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._collect, name="soak-cat", daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.hist[min(int(float(line) / _CAT_BIN_S), _CAT_BINS)] += 1

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.thread.join()

    @property
    def reads(self) -> int:
        return int(self.hist.sum())

    def p99_ms(self) -> float:
        if not self.reads:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.hist), 0.99 * self.reads))
        return round((i + 1) * _CAT_BIN_S * 1e3, 2)  # the bin's upper edge


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
                dcbm: Callable[[System], object] | None) -> None:
    cfg = load_config(text=opts.config_text or SOAK_CONFIG)
    cfg.daemon["seed"] = opts.seed
    sys = System(cfg)
    if dcbm is not None:  # tests: a migrator with a planted bug
        sys.migrators["dcbm"] = dcbm(sys)
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
                # File I/O on the mount never runs in the trio thread: it
                # serves the writes, and a FUSE request waiting on a write
                # would wait on this thread.
                cat = await trio.to_thread.run_sync(_CatSampler, mount, opts.seed)
                flipper = _Flipper(mount, opts.seed, opts.faults, summary,
                                   soak_writes(sys, faults=False))
                flipper.thread.start()

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
                # Readers and writers stop before the tree is unmounted.
                flipper.stop.set()
                await trio.to_thread.run_sync(flipper.thread.join)
                await trio.to_thread.run_sync(cat.close)
                for point in FaultInjector.POINTS:  # the last batches run clean
                    sys.faults[point].set(probability=0)
        finally:
            if flipper is not None:
                flipper.stop.set()
            if cat is not None:
                cat.close()
    summary.duration_s = round(time.monotonic() - t0, 1)
    _check(sys, summary, last, final=True)
    s = sys.engine.statistics()
    summary.faults_injected = {**sys.faults.injected(), **pinned}
    summary.fallbacks = dict(s.fallbacks)
    summary.migrated_bytes = int(sum(s.bytes_migrated.values()))
    summary.migrated_pages_by_reason = {
        r: d["pgmigrate_success"] for r, d in s.vmstat_by_reason.items()
        if d["pgmigrate_success"]}
    summary.rss_mb_end = _rss_mb()
    base = summary.rss_mb_after_warmup or summary.rss_mb_end
    summary.rss_growth_pct = round(100 * (summary.rss_mb_end - base) / base, 2)
    if cat is not None:
        summary.cat_reads = cat.reads
        summary.cat_p99_ms = cat.p99_ms()


def run_soak(opts: SoakOptions, dcbm: Callable[[System], object] | None = None) -> SoakSummary:
    """Run a soak; ``dcbm`` replaces the dcbm migrator (tests plant bugs with it)."""
    summary = SoakSummary(opts.duration, opts.seed, opts.faults)
    trio.run(_soak, opts, summary, dcbm)
    return summary


def summary_json(summary: SoakSummary) -> str:
    return json.dumps({**asdict(summary), "ok": summary.ok}, indent=1)
