"""The ``migd`` command line: thin adapters from arguments to the core and back."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

from . import _args
from ._version import migd_version

_NT_TUNABLE = "glibc.cpu.x86_non_temporal_threshold"

DESCRIPTION = """\
migd emulates the Linux kernel's page-migration engine with batched folio
copying and copy offload (the RFC's migrators: none, mtcopy, dcbm).  Drive it
as you would the kernel: cat and echo on the mounted control tree, Prometheus
on /metrics, experiments with "migd bench", long runs with "migd soak"."""

EPILOG = "Run 'migd COMMAND --help' for a command's options and their defaults."

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "etc" / "migd.toml"


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

    exp = bench.EXPERIMENTS[args.experiment]
    progress = _args.Progress()
    try:
        _args.check_output(args.json, "--json")
        _args.check_output(args.plot, "--plot")
        opts = bench.options(args.experiment, progress=progress,
                             **_args.given_options(args, exp.options))
        if opts.clock == "real":
            busy = bench.busy_reasons()
            if busy:
                print(f"migd bench: warning: busy machine ({'; '.join(busy)}): real-clock "
                      "numbers will be low", file=sys.stderr)
        report = bench.run(args.experiment, opts)
    except ValueError as e:
        progress.clear()
        print(f"migd bench: {e}", file=sys.stderr)
        return 2
    progress.clear()
    return _results("bench", report, args, bench.plot_report)


def _results(cmd: str, report, args: argparse.Namespace, plot) -> int:
    """The table on stdout, then ``--json`` and ``--plot`` (exit 1 if unwritable)."""
    print(report.table(), flush=True)
    if args.json:
        report.write_json(args.json)
    if args.plot:
        try:
            plot(report, args.plot)
        except (OSError, ValueError) as e:
            print(f"migd {cmd}: cannot write the plot: {e}", file=sys.stderr)
            return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from .daemon import ConfigError, load_config, run_daemon
    from .metrics import parse_address

    try:
        cfg = load_config(args.config)
    except ConfigError as e:  # the message names the file and the key
        print(f"migd run: {e}", file=sys.stderr)
        return 2
    try:
        parse_address(args.metrics or cfg.daemon["metrics"])
    except ValueError as e:
        print(f"migd run: {e}", file=sys.stderr)
        return 2
    return run_daemon(cfg, args.mount, args.metrics)


def _soak(args: argparse.Namespace) -> int:
    from .bench import parse_duration
    from .soak import SoakOptions, run_soak, summary_json

    progress = _args.Progress()
    try:
        if not 0 <= args.seed < 2**32:
            raise ValueError(f"--seed must be 0..{2**32 - 1}: {args.seed}")
        if args.mount is not None:
            _args.check_mountpoint(args.mount)
        _args.check_output(args.json, "--json")
        opts = SoakOptions(duration=parse_duration(args.duration), faults=args.faults,
                           seed=args.seed, mount=args.mount, progress=progress)
    except ValueError as e:
        print(f"migd soak: {e}", file=sys.stderr)
        return 2
    summary = run_soak(opts)
    progress.clear()
    text = summary_json(summary)
    print(text, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0 if summary.ok else 1


def _replay(args: argparse.Namespace) -> int:
    from . import replay

    progress = _args.Progress()
    try:
        _args.check_output(args.json, "--json")
        _args.check_output(args.plot, "--plot")
        o = replay.options(**_args.given_options(args, replay.OPTIONS))
        configs = replay.configs(o["migrators"], o["batch_pages"], o["reason_masks"],
                                 o["profile"])
        calls = replay.load_traces(args.trace, o["max_memory"], len(configs) + 1)
    except ValueError as e:
        print(f"migd replay: {e}", file=sys.stderr)
        return 2
    try:
        report = replay.replay(calls, configs, o["budget_us"], progress, o["max_memory"])
    except replay.ReplayError as e:  # over --max-memory: refused before the replay
        progress.clear()
        print(f"migd replay: {e}", file=sys.stderr)
        return 2
    progress.clear()
    return _results("replay", report, args, replay.plot_replay)


def _sweep(args: argparse.Namespace) -> int:
    from . import sweep

    progress = _args.Progress()
    try:
        _args.check_output(args.json, "--json")
        _args.check_output(args.plot, "--plot")
        o = sweep.options(**_args.given_options(args, sweep.OPTIONS))
        grid = sweep.load_grid(args.grid, o["max_cells"])
        if o["plot_axes"] is not None:
            axes = [a.strip() for a in o["plot_axes"].split(",")]
            if len(axes) != 2 or any(a not in grid.axes for a in axes):
                raise ValueError(f"--plot-axes: expected two of the grid's axes "
                                 f"({', '.join(grid.axes)}): {o['plot_axes']!r}")
        executor = sweep.executor(o["scheduler"], o["workers"])
    except ValueError as e:
        print(f"migd sweep: {e}", file=sys.stderr)
        return 2
    try:
        result = sweep.run_sweep(grid, executor, o["out"], progress)
    except ValueError as e:
        progress.clear()
        print(f"migd sweep: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.clear()
        print(f"migd sweep: interrupted; finished cells are in {o['out']}, run the same "
              "command again to resume", file=sys.stderr)
        return 130
    except sweep.LostWorker as e:
        progress.clear()
        print(f"migd sweep: {e}; finished cells are in {o['out']}, run the same command "
              "again to resume", file=sys.stderr)
        return 1
    finally:
        executor.close()
    progress.clear()
    return _results("sweep", result, args,
                    lambda r, path: sweep.plot_sweep(r, path, o["plot_axes"]))


def _install_service(args: argparse.Namespace) -> int:
    from ._service import install_service

    config = Path(args.config)
    if not config.is_file():
        print(f"migd install-service: --config: no such file: {args.config}", file=sys.stderr)
        return 2
    try:
        return install_service(config, Path(args.prefix), args.dry_run)
    except OSError as e:
        print(f"migd install-service: {e}", file=sys.stderr)
        return 1


def _warm_up(args: argparse.Namespace) -> int:
    import time

    import trio

    from .migrate import compile_cache, warm_up

    cache, kernels, cached = compile_cache()
    t0 = time.monotonic()
    progress = _args.Progress()
    trio.run(warm_up, lambda stage: progress(f"compiling {stage}"))
    progress.clear()
    what = "loaded from" if cached else "compiled into"
    print(f"{kernels} kernels {what} {cache} in {time.monotonic() - t0:.1f} s")
    return 0


def _prometheus_config(args: argparse.Namespace) -> int:
    from ._service import prometheus_config

    try:
        text = prometheus_config(args.metrics or _config_defaults()["metrics"])
    except ValueError as e:
        print(f"migd prometheus-config: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


@functools.cache
def _config_defaults() -> dict:
    """The shipped config's ``[daemon]`` table (the schema's defaults if it is missing)."""
    from .daemon import ConfigError, load_config

    try:
        return load_config(DEFAULT_CONFIG).daemon
    except ConfigError:
        return load_config(text="").daemon


def _add_run(sub) -> None:
    d = _config_defaults()
    r = sub.add_parser("run", help="run the daemon (control tree, /metrics, workloads)",
                       description="Run the daemon: mount the control tree, serve /metrics, "
                       "run the config's workloads until SIGTERM or SIGINT.")
    r.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="FILE",
                   help=f"the config file (default: {DEFAULT_CONFIG})")
    r.add_argument("--mount", default=None, metavar="DIR",
                   help=f"mount point of the control tree (default: {d['mount']}, the "
                   "config's daemon.mount)")
    r.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help=f"serve Prometheus /metrics there (default: {d['metrics']}, the "
                   "config's daemon.metrics)")
    r.set_defaults(func=_run)


def _add_soak(sub) -> None:
    k = sub.add_parser("soak", help="random work, knob flips and faults, checked throughout",
                       description="Random workloads, knob flips and (with --faults) "
                       "injected faults on a mounted tree, with integrity checks all the way; "
                       "exits 1 on any lost or corrupted page.")
    k.add_argument("--duration", default="10m", metavar="TIME",
                   help="how long to run, e.g. 60s, 10m, 2h (default: 10m)")
    k.add_argument("--faults", action="store_true", help="inject random faults of every kind")
    k.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    k.add_argument("--json", default=None, metavar="FILE", help="write the summary there too")
    k.add_argument("--mount", default=None, metavar="DIR",
                   help="where to mount the tree (default: a fresh temporary directory)")
    k.set_defaults(func=_soak)


def _add_outputs(p, json_help: str, plot_help: str) -> None:
    """``--json FILE`` and ``--plot FILE.png``, which :func:`_results` writes."""
    p.add_argument("--json", default=None, metavar="FILE", help=json_help)
    p.add_argument("--plot", default=None, metavar="FILE.png", help=plot_help)


def _add_bench(sub) -> None:
    from .bench import EXPERIMENTS

    b = sub.add_parser("bench", help="run an experiment (throughput, batch-sweep, seed, ...)",
                       description="Run one experiment; human tables on stdout, --json and "
                       "--plot for the rows.", epilog="Run 'migd bench EXPERIMENT --help' for "
                       "an experiment's options and their defaults.")
    exps = b.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT",
                            parser_class=_args.Parser)
    for e in EXPERIMENTS.values():
        p = exps.add_parser(e.name, help=e.help,
                            description=f"{e.help[0].upper()}{e.help[1:]}: {e.description}")
        _args.add_options(p, e.options)
        _add_outputs(p, "write the rows as JSON there too", "draw the results there (matplotlib)")
        p.set_defaults(func=_bench)


def _add_replay(sub) -> None:
    r = sub.add_parser("replay", help="replay a kernel's migrate trace through configurations",
                       description="Rebuild each migrate_pages() call from ftrace text "
                       "(trace_pipe, trace or trace-cmd report output; gzip accepted) and "
                       "replay the calls on the virtual clock through each configuration: "
                       "what offload would do on the machine that recorded the trace.")
    from . import replay

    r.add_argument("trace", nargs="+", metavar="TRACE", help="ftrace text files")
    _args.add_options(r, replay.OPTIONS)
    _add_outputs(r, "write the report as JSON",
                 "draw time and latency per configuration and reason (matplotlib)")
    r.set_defaults(func=_replay)


def _add_sweep(sub) -> None:
    s = sub.add_parser("sweep", help="run a grid of virtual-clock cells, locally or on Dask",
                       description="Run the cartesian product of GRID.toml's [axes] as "
                       "independent virtual-clock cells, on local worker processes or a Dask "
                       "distributed cluster; finished cells are kept in --out and skipped "
                       "on a rerun.")
    from . import sweep

    s.add_argument("grid", metavar="GRID.toml", help="the grid file ([axes], [cell])")
    _args.add_options(s, sweep.OPTIONS)
    _add_outputs(s, "write the rows as JSON", "plot the first metric over two axes (matplotlib)")
    s.set_defaults(func=_sweep)


def _add_service(sub) -> None:
    s = sub.add_parser("install-service", help="install the systemd unit and its config",
                       description="Install systemd/migd.service into /etc/systemd/system "
                       "(its ExecStart pointed at this migd) and the config at the path the "
                       "unit reads; an existing config is kept.")
    s.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="FILE",
                   help=f"the config to install (default: {DEFAULT_CONFIG})")
    s.add_argument("--prefix", default="/", metavar="DIR",
                   help="install under this root instead of / (default: /)")
    s.add_argument("--dry-run", action="store_true", help="say what would be written, write "
                   "nothing")
    s.set_defaults(func=_install_service)
    w = sub.add_parser("warm-up", help="compile migd's kernels ahead of the first start",
                       description="Compile (or load) every compiled path into numba's cache "
                       "for this migd version, so that the first migd run, bench or soak "
                       "starts in about a second; install-service runs it.")
    w.set_defaults(func=_warm_up)
    d = _config_defaults()
    p = sub.add_parser("prometheus-config", help="print a Prometheus config scraping migd",
                       description="Print a prometheus.yml whose scrape target follows "
                       "--metrics (the address given to migd run).")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help=f"the address migd run serves /metrics on (default: {d['metrics']})")
    p.set_defaults(func=_prometheus_config)


def _add_profile(sub) -> None:
    from .profile import add_parser

    add_parser(sub, _args.Parser)


def build_parser() -> argparse.ArgumentParser:
    p = _args.Parser(prog="migd", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"migd {migd_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_args.Parser)
    _add_run(sub)
    _add_bench(sub)
    _add_soak(sub)
    _add_replay(sub)
    _add_sweep(sub)
    _add_service(sub)
    _add_profile(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _ensure_streaming_copies()
    args = build_parser().parse_args(argv)
    return args.func(args)
