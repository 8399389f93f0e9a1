"""The bench experiments, declared once: name, help, options, runner.

Real clock: real bytes move and every number is wall time measured around the
engine; the ``memcpy`` row is this machine's copy limit measured in the same
run, so ratios stay meaningful on a shared, noisy host.  Virtual clock: the same
engine under MockClock with one word per page; times are the profile's model.

``EXPERIMENTS`` is the only list of experiments: the CLI makes one ``migd bench
NAME`` subcommand of each entry, with exactly the options it declares, so
``migd bench throughput --help`` shows the eight options throughput reads and
not the calibration directory of ``seed``.
"""

from __future__ import annotations

import gc
from pathlib import Path

import trio

from .._args import Option
from ..hw import get_profile, mock_clock
from ..migrate import warm_up
from ._callers import (
    DEFAULT_LIST_PAGES,
    callers,
    iommu_merge,
    parse_batch_copy,
    parse_callers,
    shared_channels,
)
from ._catlat import MAX_READERS, MAX_SCRAPE_HZ, cat_latency, parse_readers, parse_scrape_hz
from ._clear import clear
from ._options import (
    BATCH_PAGES,
    MIGRATORS,
    PROFILE,
    VARIANT,
    Experiment,
    parse_duration,
    parse_int_list,
    parse_orders,
    parse_total,
)
from ._policies import DEFAULT_BUDGETS_US, DEFAULT_SWEEP, auto_choice, latency_budget
from ._report import BenchReport, BenchRow, Layout
from ._rig import BenchOptions, Rig
from ._scrape import scrape
from ._seed import seed

#: batch-sweep's bounds without ``--batch-pages``: 512 .. 262144 base pages.
SWEEP_BATCH_PAGES = [512 << i for i in range(10)]


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _doubling(values: list[int]) -> str:
    """``512,1024,...,262144`` for a long list of doublings (as --help shows it)."""
    return f"{values[0]},{values[1]},...,{values[-1]}"


def _repeat(text: str) -> int:
    (n,) = parse_int_list(text, "--repeat", 1, 1000)
    return n


def _calibration(text: str) -> Path:
    p = Path(text)
    if not (p / "throughput.csv").is_file():
        raise ValueError(f"--calibration {text}: no throughput.csv there")
    return p


CLOCK = Option("--clock", "clock", "real: real bytes move, wall time; virtual: the profile's "
               "cost model on a mock clock, no bytes move (deterministic, seconds per grid)",
               str, "real", choices=("real", "virtual"))
ORDERS = Option("--orders", "orders", "folio orders, comma-separated (0 = 4 KiB .. 9 = 2 MiB)",
                parse_orders, "0,2,4,6,8,9", "N,...")
TOTAL = Option("--total", "total", "bytes migrated per run (the tenant's size), e.g. 1G, 256M; "
               "at most a quarter of this machine's memory", parse_total, "1G", "SIZE")
REPEAT = Option("--repeat", "repeat", "runs per row; the row is the median run", _repeat, "1",
                "N")
VERIFY = Option("--verify", "verify", "check every page's content after each run (outside the "
                "timed region); the row says verified")
DURATION = Option("--duration", "duration", "how long the WHOLE run reads the tree (e.g. 10s, "
                  "2m), shared evenly by the orders x migrators rows", parse_duration, "10s",
                  "TIME")
READERS = Option("--readers", "readers", f"reader processes, each looping over the whole tree "
                 f"(1..{MAX_READERS})", parse_readers, "1", "N")
SCRAPE_HZ = Option("--scrape-hz", "scrape_hz", f"also scrape /metrics this many times a second "
                   f"from another process, timed (0..{MAX_SCRAPE_HZ:g}; 0: no scraper)",
                   parse_scrape_hz, "0", "HZ")
BUDGETS = Option("--budget-us", "budgets_us", "latency budgets in microseconds, comma-separated",
                 lambda t: parse_int_list(t, "--budget-us", 1, 10_000_000),
                 _csv(DEFAULT_BUDGETS_US), "US,...")
CALIBRATION = Option("--calibration", "calibration", "directory of calibration CSVs "
                     "(default: the set packaged with migd)", _calibration, metavar="DIR")
VIRTUAL = CLOCK.but(default="virtual")
CALLERS = Option("--callers", "callers", "concurrent move_pages() callers, each a slice of "
                 "the tenant (channel contention)",
                 lambda t: parse_int_list(t, "--callers", 1, 64)[0], "1", "N")
CALLERS_OPT = Option("--caller", "caller_names", "callers of migrate_pages(), comma-separated: "
                     "promotion, demotion, compaction (compact_memory, sync), kcompactd "
                     "(sync-light), direct_compaction (async), move_pages, damon",
                     parse_callers, "promotion,demotion,compaction,kcompactd,"
                     "direct_compaction,move_pages,damon", "C,...")
LIST_PAGES = Option("--list-pages", "list_pages", "each caller's list bound in base pages "
                    "(the emulator-only knob callers/<caller>/list_pages; 0: the kernel's), "
                    "comma-separated; one row each",
                    lambda t: parse_int_list(t, "--list-pages", 0, 262144),
                    _csv(DEFAULT_LIST_PAGES), "N,...")
BATCH_COPY = Option("--batch-copy", "batch_copy", "kernel/mm/migrate_offload/batch_copy "
                    "values, comma-separated: gated (the RFC), always (the core batch-copies "
                    "what no migrator takes)", parse_batch_copy, "gated", "M,...")


async def memcpy(opts: BenchOptions) -> BenchReport:
    rig = Rig(opts, 9)
    return BenchReport("memcpy", opts.clock, opts.profile_name, [rig.memcpy()])


def _median_row(rows: list[BenchRow]) -> BenchRow:
    rows = sorted(rows, key=lambda r: r.seconds)
    return rows[len(rows) // 2]


async def throughput(opts: BenchOptions) -> BenchReport:
    rows: list[BenchRow] = []
    notes = []
    rig = None
    for order in opts.orders:
        opts.progress(f"order {order}: building a {opts.total >> 20} MiB tenant")
        rig = Rig(opts, order, reuse=rig)
        if not rows and opts.clock == "real":
            rows.append(rig.memcpy())
            notes.append("real clock: copies use non-temporal stores above 1 MiB "
                         "(glibc x86_non_temporal_threshold), the memcpy row too")
        for spec in opts.migrators:
            for batch_pages in opts.batch_pages or [512]:
                runs = []
                for i in range(opts.repeat):
                    opts.progress(f"order {order} {spec} batch {batch_pages}: run {i + 1}")
                    runs.append(await rig.migrate(spec, batch_pages, callers=opts.callers))
                rows.append(_median_row(runs))
    return BenchReport("throughput", opts.clock, opts.profile_name, rows, notes)


async def batch_sweep(opts: BenchOptions) -> BenchReport:
    """A bound larger than the tenant batches exactly as the tenant's size does, so
    such rows would repeat the last one under another label: they are left out
    and a note says which (rather than printed as if measured)."""
    bounds = opts.batch_pages or SWEEP_BATCH_PAGES
    pages = opts.total // 4096
    kept = [b for b in bounds if b <= pages]
    if not kept:
        raise ValueError(f"every --batch-pages bound is larger than --total "
                         f"({pages} pages): nothing to sweep")
    opts.batch_pages = kept
    report = await throughput(opts)
    report.experiment = "batch-sweep"
    left_out = [b for b in bounds if b > pages]
    if left_out:
        report.notes.append(f"left out bounds larger than --total ({pages} pages): "
                            f"{_csv(left_out)}")
    return report


#: throughput's table: dcbm rows say their variant, callers, the channels a
#: batch got (mean) and the batches refused for want of one.
DCBM_TABLE = Layout(columns=("variant", "callers", "channels_per_batch", "batches_refused"))

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment("throughput", "folio order x migrator: GB/s, first-folio latency, "
               "inaccessible time",
               "move_pages() of the whole tenant from node 0 to node 1 for each folio order, "
               "migrator and batch bound; on the real clock a memcpy row gives this machine's "
               "copy limit, measured in the same run.",
               (CLOCK, PROFILE, ORDERS, MIGRATORS, TOTAL, BATCH_PAGES, REPEAT, VERIFY, VARIANT,
                CALLERS), throughput, DCBM_TABLE),
    Experiment("batch-sweep", "nr_max_batched_migration sweep: throughput against "
               "first-folio latency",
               "throughput with a row per batch bound; bounds larger than --total are left "
               "out (they would batch exactly as --total does).",
               (CLOCK, PROFILE, ORDERS, MIGRATORS, TOTAL,
                BATCH_PAGES.but(default=_csv(SWEEP_BATCH_PAGES),
                                shown=_doubling(SWEEP_BATCH_PAGES)), REPEAT, VERIFY, VARIANT),
               batch_sweep, DCBM_TABLE),
    Experiment("seed", "every published cell of the calibration set, beside its value",
               "runs every cell of shared/calibration (throughput, vanilla first-folio, batch "
               "sweep, mtcopy) on 1 GiB and prints the published value and the relative "
               "error; the last lines give the median errors.",
               (VIRTUAL, PROFILE, CALIBRATION), seed, Layout("published")),
    Experiment("memcpy", "this machine's copy limit (one large copy, best of 3)",
               "one copy of --total bytes between the two nodes' arenas; on the virtual "
               "clock, the profile's CPU copy bandwidth.",
               (CLOCK, PROFILE, TOTAL), memcpy, Layout(speed=False)),
    Experiment("cat-latency", "latency of reading the mounted tree while migrating at "
               "full speed",
               "mounts the daemon's control tree (FUSE), migrates a tenant back and forth "
               "and times --readers separate processes reading every attribute (and, with "
               "--scrape-hz, a scraper of /metrics); real clock only.",
               (PROFILE, ORDERS, MIGRATORS, TOTAL, DURATION, READERS, SCRAPE_HZ), cat_latency,
               Layout("cat")),
    Experiment("scrape", "time of a full /metrics scrape over HTTP, every series present",
               "runs each migrator and fires faults so every series exists, then times 50 "
               "scrapes per --repeat over real HTTP.", (REPEAT,), scrape, Layout("notes")),
    Experiment("latency-budget", "the adaptive batch bound under a budget, against fixed "
               "bounds",
               "for each budget, the adaptive bound against the best fixed bound whose median "
               "first-folio latency is under the budget.",
               (VIRTUAL, PROFILE, ORDERS, MIGRATORS, TOTAL,
                BATCH_PAGES.but(default=_csv(DEFAULT_SWEEP), shown=_doubling(DEFAULT_SWEEP),
                                help="the fixed bounds to compare with, comma-separated"),
                BUDGETS, VERIFY), latency_budget,
               Layout(columns=("policy", "budget_us", "over_budget_pct", "vs_best_fixed"))),
    Experiment("auto-choice", "the automatic CPU/offload choice, against the CPU and always "
               "offloading",
               "for each order and offload migrator, the CPU, always offloading, and the "
               "automatic choice (none in --migrators is ignored: it is always compared).",
               (VIRTUAL, PROFILE, ORDERS,
                MIGRATORS.but(default=_csv(f"dcbm:{c}" for c in range(1, 17)),
                              shown="dcbm:1,dcbm:2,...,dcbm:16"),
                TOTAL, BATCH_PAGES, VERIFY), auto_choice,
               Layout(columns=("policy", "offloaded_pct", "vs_better"))),
    Experiment("clear", "THP fault latency and CPU per fault: CPU clear, clearing offload, "
               "prezero pool",
               "64 faults of 2 MiB regions per mode (cpu, dma with and without cpu_warm, a "
               "pool hit) with the newest dcbm, on every profile unless --profile; then the "
               "pool's hit rate against the fault rate and max_per_node.",
               (CLOCK, PROFILE.but(help="hardware profile (default: every profile on the "
                                   "virtual clock, native on the real one)")),
               clear, Layout(columns=("profile", "mode", "got", "fault_us_p50",
                                      "fault_us_p99", "cpu_us_per_fault", "max_per_node",
                                      "hit_pct"), speed=False)),
    Experiment("callers", "each caller x its list bound x migrator: throughput, first "
               "folio, CPU saved",
               "runs each caller of migrate_pages() as the daemon does (one tenant of "
               "--total, a fresh machine per row) with its list bound set through the "
               "emulator-only knob callers/<caller>/list_pages; cpu_saved_seconds is the "
               "none row's copy CPU less this row's.",
               (VIRTUAL, PROFILE, ORDERS.but(default="0,4"),
                MIGRATORS.but(default="none,mtcopy:2,dcbm:4,dcbm:16"),
                TOTAL.but(default="8M"), CALLERS_OPT, LIST_PAGES, BATCH_COPY, VARIANT, VERIFY),
               callers,
               Layout(columns=("caller", "list_pages", "batch_copy", "variant",
                               "cpu_saved_seconds"), speed=False)),
    Experiment("iommu-merge", "how often real layouts merge a batch's source and "
               "destination unevenly (dcbm falls back, EINVAL)",
               "a move_pages() of the tenant with dcbm on a fresh node, after a long run of "
               "partial moves, and after compaction; rows carry layout, batches, "
               "einval_batches, einval_pct and entries_per_segment (folios per mapped "
               "segment: how far the IOMMU merged them).",
               (VIRTUAL, PROFILE, ORDERS.but(default="0,2,4"),
                MIGRATORS.but(default="dcbm:4"), TOTAL.but(default="8M")), iommu_merge,
               Layout(columns=("layout", "batches", "einval_batches", "einval_pct",
                               "entries_per_segment"),
                      speed=False)),
    Experiment("shared-channels", "concurrent move_pages() callers: exclusive channel "
               "claims (PTDMA, DSA) against dma_find_channel()'s shared one (SDXI)",
               "N callers at once, each moving its own tenant (--total shared among them); "
               "--list-pages gives the caller counts here.",
               (VIRTUAL, PROFILE, ORDERS.but(default="0,9"),
                MIGRATORS.but(default="none,dcbm:16"), TOTAL.but(default="32M"),
                LIST_PAGES.but(default="1,2,4", help="the numbers of concurrent callers")),
               shared_channels,
               Layout(columns=("concurrency", "batches_refused", "fallback_folios",
                               "channels_per_batch"), speed=False)),
]}


def run(experiment: str, opts: BenchOptions) -> BenchReport:
    """Run ``experiment`` to completion on the chosen clock; the report has
    the experiment's table layout."""
    exp = EXPERIMENTS[experiment]
    fn = exp.runner
    get_profile(opts.profile_name)  # fail early on a bad name
    opts.progress("warming up the compiled paths")
    trio.run(warm_up)
    # Everything imported so far (numba, llvmlite, trio) lives for the whole
    # run; without this the cyclic GC rescans it ~100 times a second, costing
    # ~10% of a real-clock run.
    gc.freeze()
    if opts.clock == "virtual":
        report = trio.run(fn, opts, clock=mock_clock())
    else:
        report = trio.run(fn, opts)
    report.layout = exp.table
    return report
