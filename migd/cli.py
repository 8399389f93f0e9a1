"""The ``migd`` command line: ``run``, ``bench``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_NT_TUNABLE = "glibc.cpu.x86_non_temporal_threshold"


def _ensure_streaming_copies() -> None:
    """Re-exec once with glibc's non-temporal-store threshold at 1 MiB.

    glibc sizes that threshold from the L3 cache; on hosts with a large L3 it
    sits above 100 MiB, so a 2 MiB folio copy pollutes the cache with regular
    stores and runs at ~0.6x of a large memcpy.  Migration copies are streaming
    copies of cold data, which is what non-temporal stores are for (and what
    the DMA engines migd emulates do).  Tunables are read at process start,
    hence the re-exec; MIGD_NO_REEXEC=1 disables it.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if _NT_TUNABLE in tunables or os.environ.get("MIGD_NO_REEXEC") or sys.platform != "linux":
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, f"{_NT_TUNABLE}=0x100000"]))
    os.execve(sys.executable, [sys.executable, "-m", "migd", *sys.argv[1:]], env)


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        if args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
        _check_output(args.json, "--json")
        _check_output(args.plot, "--plot")
        opts = bench.BenchOptions(
            clock=args.clock or bench.DEFAULT_CLOCK.get(args.experiment, "real"),
            profile=args.profile,
            orders=bench.parse_orders(args.orders),
            migrators=bench.parse_migrators(args.migrators, bench.AVAILABLE_MIGRATORS),
            total=bench.parse_size(args.total),
            batch_pages=(None if args.batch_pages is None else
                         [int(x) for x in args.batch_pages.split(",")]),
            verify=args.verify, repeat=args.repeat,
            progress=_progress_printer(),
            calibration=_calibration_dir(args.calibration),
            duration=_duration(args.duration),
            budgets_us=(None if args.budget_us is None else bench.parse_int_list(
                args.budget_us, "--budget-us", 1, 10_000_000)))
        if opts.batch_pages is not None:
            from .migrate import NR_MAX_BATCHED_MIGRATION_LIMIT
            if any(not 1 <= b <= NR_MAX_BATCHED_MIGRATION_LIMIT for b in opts.batch_pages):
                raise ValueError(f"--batch-pages must be 1..{NR_MAX_BATCHED_MIGRATION_LIMIT}")
        report = bench.run(args.experiment, opts)
    except ValueError as e:
        print(f"migd bench: {e}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        report.write_json(args.json)
    if args.plot:
        from .bench import plot_report
        try:
            plot_report(report, args.plot)
        except (OSError, ValueError) as e:
            print(f"migd bench: cannot write the plot: {e}", file=sys.stderr)
            return 1
    return 0


def _check_mountpoint(path: str) -> None:
    """A directory, or a dead mount (ENOTCONN: the start clears it)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = 0
    except OSError:
        return  # e.g. "Transport endpoint is not connected": a stale mount
    if not stat.S_ISDIR(mode):
        raise ValueError(f"--mount: not a directory: {path!r}")


def _check_output(path: str | None, what: str) -> None:
    """Fail before the run, not after it, on a file that cannot be written."""
    if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise ValueError(f"{what}: no such directory for {path!r}")


def _duration(text: str) -> float:
    s = text.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(s[-1:])
    try:
        value = float(s[:-1]) * mult if mult else float(s)
    except ValueError:
        raise ValueError(f"bad duration {text!r} (expected e.g. 30s, 10m)") from None
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def _calibration_dir(path: str | None):
    from pathlib import Path

    if path is None:
        return None
    p = Path(path)
    if not (p / "throughput.csv").is_file():
        raise ValueError(f"--calibration {path}: no throughput.csv there")
    return p


def _progress_printer():
    """One status line on a terminal's stderr, with the time so far; nothing
    when stderr is a file or a pipe (logs stay clean)."""
    if not sys.stderr.isatty():
        return lambda msg: None
    import time
    t0 = time.monotonic()

    def show(msg: str) -> None:
        print(f"\r\x1b[K[{time.monotonic() - t0:5.0f}s] {msg}", end="", file=sys.stderr,
              flush=True)
    return show


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "migd.toml"


def _run(args: argparse.Namespace) -> int:
    from .daemon import ConfigError, load_config, run_daemon
    from .metrics._http import parse_address

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"migd run: {args.config}: {e}", file=sys.stderr)
        return 2
    try:
        parse_address(args.metrics or cfg.daemon["metrics"])
    except ValueError as e:
        print(f"migd run: {e}", file=sys.stderr)
        return 2
    return run_daemon(cfg, args.mount, args.metrics)


def _soak(args: argparse.Namespace) -> int:
    from .soak import SoakOptions, run_soak, summary_json

    try:
        if not 0 <= args.seed < 2**32:
            raise ValueError(f"--seed must be 0..{2**32 - 1}: {args.seed}")
        if args.mount is not None:
            _check_mountpoint(args.mount)
        _check_output(args.json, "--json")
        opts = SoakOptions(duration=_duration(args.duration), faults=args.faults,
                           seed=args.seed, mount=args.mount, progress=_progress_printer())
    except ValueError as e:
        print(f"migd soak: {e}", file=sys.stderr)
        return 2
    summary = run_soak(opts)
    text = summary_json(summary)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if summary.ok else 1


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .bench import EXPERIMENTS

    p = _Parser(prog="migd", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="FILE")
    r.add_argument("--mount", default=None, metavar="DIR",
                   help="mount point of the control tree (default: the config's)")
    r.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus /metrics there (default: the config's)")
    r.set_defaults(func=_run)
    k = sub.add_parser("soak", help="random work, knob flips and faults, checked throughout")
    k.add_argument("--duration", default="10m", help="e.g. 60s, 10m, 2h")
    k.add_argument("--faults", action="store_true", help="inject random faults of every kind")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", default=None, metavar="FILE")
    k.add_argument("--mount", default=None, metavar="DIR",
                   help="where to mount the tree (default: a fresh temporary directory)")
    k.set_defaults(func=_soak)
    b = sub.add_parser("bench", help="run an experiment")
    b.add_argument("experiment", choices=sorted(EXPERIMENTS))
    b.add_argument("--clock", choices=("real", "virtual"), default=None,
                   help="default: virtual for seed, latency-budget and auto-choice, "
                   "real for the others")
    b.add_argument("--profile", default=None, help="hardware profile (default: native on "
                   "the real clock, zen3-ptdma on the virtual one)")
    b.add_argument("--orders", default="0,2,4,6,8,9")
    b.add_argument("--migrators", default="cpu")
    b.add_argument("--total", default="1G")
    b.add_argument("--batch-pages", default=None)
    b.add_argument("--repeat", type=int, default=1)
    b.add_argument("--verify", action="store_true")
    b.add_argument("--json", default=None, metavar="FILE")
    b.add_argument("--plot", default=None, metavar="FILE.png",
                   help="draw the results (matplotlib)")
    b.add_argument("--duration", default="10s",
                   help="cat-latency: how long to read (e.g. 10s, 2m)")
    b.add_argument("--budget-us", default=None, metavar="US,...",
                   help="latency-budget: the budgets (default 250,500,1000,2000,5000)")
    b.add_argument("--calibration", default=None, metavar="DIR",
                   help="seed: directory of calibration CSVs (default: the packaged set)")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _ensure_streaming_copies()
    args = build_parser().parse_args(argv)
    return args.func(args)
