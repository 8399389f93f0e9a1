"""The ``migd`` command line: one frame around every subcommand.

Each subcommand is declared once (:data:`COMMANDS`: its help, its options,
the function that runs it); the frame builds the parser from the
declarations, checks ``--json``/``--plot`` before any work, runs the command,
clears the progress line, prints the result and is the one place that prints
an error (one line) and picks the exit status.  A new subcommand is a run
function and one more ``Command``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import _args
from ._args import Command, Option, in_range
from ._self import this_migd
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
    python, env = this_migd()  # this migd, whatever the working directory holds
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [tunables, f"{_NT_TUNABLE}=0x100000"]))
    os.execve(python[0], [*python, "-m", "migd", *sys.argv[1:]], env)


# --- the commands: each runs on parsed values and returns a result ----------------------


@dataclass
class Call:
    """What the frame hands a command besides its values: the progress line
    and the one way to warn (the line cleared first)."""

    prog: str
    progress: _args.Progress = field(default_factory=_args.Progress)

    def warn(self, message: str) -> None:
        self.progress.clear()
        print(f"{self.prog}: warning: {message}", file=sys.stderr, flush=True)


@dataclass
class Text:
    """A result that is text: printed, and written as is by ``--json``;
    exit status 1 unless ``ok``."""

    text: str
    ok: bool = True

    def table(self) -> str:
        return self.text

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.text + "\n")


def _run(o: dict, call: Call) -> int:
    from .daemon import check_daemon_option, load_config, run_daemon
    from .metrics import parse_address

    cfg = load_config(o["config"])  # ConfigError names the file and the key
    if o["mount"] is not None:
        check_daemon_option("mount", o["mount"])  # as daemon.mount is checked
    parse_address(o["metrics"] or cfg.daemon["metrics"])
    return run_daemon(cfg, o["mount"], o["metrics"])


def _bench(experiment: str, o: dict, call: Call):
    from . import bench

    opts = bench.BenchOptions(progress=call.progress, **o)
    if opts.clock == "real":
        busy = bench.busy_reasons()
        if busy:
            call.warn(f"busy machine ({'; '.join(busy)}): real-clock numbers will be low")
    return bench.run(experiment, opts)


def _soak(o: dict, call: Call) -> Text:
    from .soak import SoakOptions, run_soak, summary_json

    summary = run_soak(SoakOptions(progress=call.progress, **o))
    return Text(summary_json(summary), summary.ok)


def _replay(o: dict, call: Call):
    from . import replay

    configs = replay.configs(o["migrators"], o["batch_pages"], o["reason_masks"], o["profile"],
                             o["variant"])
    calls = replay.load_traces(o["trace"], o["max_memory"], len(configs) + 1)
    # ReplayError (a ValueError) over --max-memory: refused before the replay
    return replay.replay(calls, configs, o["budget_us"], call.progress, o["max_memory"])


def _sweep(o: dict, call: Call):
    from . import sweep

    grid = sweep.load_grid(o["grid"], o["max_cells"])
    sweep.check_plot_axes(o["plot_axes"], grid.axes)
    executor = sweep.executor(o["scheduler"], o["workers"])
    resume = f"finished cells are in {o['out']}, run the same command again to resume"
    try:
        return sweep.run_sweep(grid, executor, o["out"], call.progress)
    except KeyboardInterrupt:
        raise _args.Failed(f"interrupted; {resume}", 130) from None
    except sweep.LostWorker as e:
        raise _args.Failed(f"{e}; {resume}") from None
    finally:
        executor.close()


def _install_service(o: dict, call: Call) -> int:
    from ._service import install_service

    return install_service(Path(o["config"]), Path(o["prefix"]), o["dry_run"])


def _warm_up(o: dict, call: Call) -> Text:
    import time

    import trio

    from .daemon import compile_read_paths
    from .migrate import compile_cache, warm_up

    cache, kernels, cached = compile_cache()
    t0 = time.monotonic()
    call.progress("compiling the read paths")
    compile_read_paths()  # before warm_up(), whose end marks the cache warm
    trio.run(warm_up, lambda stage: call.progress(f"compiling {stage}"))
    what = "loaded from" if cached else "compiled into"
    return Text(f"{kernels} kernels {what} {cache} in {time.monotonic() - t0:.1f} s")


def _prometheus_config(o: dict, call: Call) -> Text:
    from ._service import prometheus_config

    return Text(prometheus_config(o["metrics"] or _config_defaults()["metrics"]))


@functools.cache
def _config_defaults() -> dict:
    """The shipped config's ``[daemon]`` table (the schema's defaults if it is missing)."""
    from .daemon import ConfigError, load_config

    try:
        return load_config(DEFAULT_CONFIG).daemon
    except ConfigError:
        return load_config(text="").daemon


# --- the declarations: one Command each, in --help order -------------------------------


def _file(text: str) -> str:
    if not Path(text).is_file():
        raise ValueError(f"--config: no such file: {text}")
    return text


_seed = in_range("--seed", 0, 2**32 - 1)


def _mountpoint(text: str) -> str:
    _args.check_mountpoint(text)
    return text


def _run_options() -> _args.Options:
    d = _config_defaults()
    return (
        Option("--config", "config", "the config file", str, str(DEFAULT_CONFIG), "FILE"),
        Option("--mount", "mount", f"mount point of the control tree (default: {d['mount']}, "
               "the config's daemon.mount)", str, metavar="DIR"),
        Option("--metrics", "metrics", f"serve Prometheus /metrics there (default: "
               f"{d['metrics']}, the config's daemon.metrics)", str, metavar="HOST:PORT"),
    )


def _soak_options() -> _args.Options:
    from .bench import parse_duration

    return (
        Option("--duration", "duration", "how long to run, e.g. 60s, 10m, 2h", parse_duration,
               "10m", "TIME"),
        Option("--faults", "faults", "inject random faults of every kind"),
        Option("--seed", "seed", "random seed", _seed, "0", "SEED"),
        Option("--mount", "mount", "where to mount the tree (default: a fresh temporary "
               "directory)", _mountpoint, metavar="DIR"),
    )


def _experiments() -> tuple[Command, ...]:
    from . import bench

    return tuple(Command(
        e.name, e.help, f"{e.help[0].upper()}{e.help[1:]}: {e.description}",
        functools.partial(_bench, e.name), e.options,
        json="write the rows as JSON there too", plot="draw the results there (matplotlib)",
        draw=lambda report, path, o: bench.plot_report(report, path),
    ) for e in bench.EXPERIMENTS.values())


def _replay_options() -> _args.Options:
    from . import replay

    return replay.OPTIONS


def _sweep_options() -> _args.Options:
    from . import sweep

    return sweep.OPTIONS


def _draw_sweep(result, path: str, o: dict) -> None:
    from . import sweep

    sweep.plot_sweep(result, path, o["plot_axes"])


def _draw_replay(report, path: str, o: dict) -> None:
    from . import replay

    replay.plot_replay(report, path)


def _profile_commands() -> tuple[Command, ...]:
    from . import profile

    return profile.COMMANDS


def _prometheus_options() -> _args.Options:
    d = _config_defaults()
    return (Option("--metrics", "metrics", "the address migd run serves /metrics on "
                   f"(default: {d['metrics']})", str, metavar="HOST:PORT"),)


COMMANDS: tuple[Command, ...] = (
    Command("run", "run the daemon (control tree, /metrics, workloads)",
            "Run the daemon: mount the control tree, serve /metrics, run the config's "
            "workloads until SIGTERM or SIGINT.", _run, _run_options),
    Command("bench", "run an experiment (throughput, batch-sweep, seed, ...)",
            "Run one experiment; human tables on stdout, --json and --plot for the rows.",
            epilog="Run 'migd bench EXPERIMENT --help' for an experiment's options and their "
            "defaults.", commands=_experiments, metavar="EXPERIMENT"),
    Command("soak", "random work, knob flips and faults, checked throughout",
            "Random workloads, knob flips and (with --faults) injected faults on a mounted "
            "tree, with integrity checks all the way; exits 1 on any lost or corrupted page.",
            _soak, _soak_options, json="write the summary there too"),
    Command("replay", "replay a kernel's migrate trace through configurations",
            "Rebuild each migrate_pages() call from ftrace text (trace_pipe, trace or "
            "trace-cmd report output; gzip accepted) and replay the calls on the virtual clock "
            "through each configuration: what offload would do on the machine that recorded "
            "the trace.", _replay, _replay_options, json="write the report as JSON",
            plot="draw time and latency per configuration and reason (matplotlib)",
            draw=_draw_replay),
    Command("sweep", "run a grid of virtual-clock cells, locally or on Dask",
            "Run the cartesian product of GRID.toml's [axes] as independent virtual-clock "
            "cells, on local worker processes or a Dask distributed cluster; finished cells "
            "are kept in --out and skipped on a rerun.", _sweep, _sweep_options,
            json="write the rows as JSON",
            plot="plot the first metric over two axes (matplotlib)", draw=_draw_sweep),
    Command("install-service", "install the systemd unit and its config",
            "Install systemd/migd.service into /etc/systemd/system (its ExecStart pointed at "
            "this migd) and the config at the path the unit reads; an existing config is "
            "kept.", _install_service, (
                Option("--config", "config", "the config to install", _file,
                       str(DEFAULT_CONFIG), "FILE"),
                Option("--prefix", "prefix", "install under this root instead of /", str, "/",
                       "DIR"),
                Option("--dry-run", "dry_run", "say what would be written, write nothing"))),
    Command("warm-up", "compile migd's kernels ahead of the first start",
            "Compile (or load) every compiled path into numba's cache for this migd version, "
            "so that the first migd run, bench or soak starts in about a second; "
            "install-service runs it.", _warm_up),
    Command("prometheus-config", "print a Prometheus config scraping migd",
            "Print a prometheus.yml whose scrape target follows --metrics (the address given "
            "to migd run).", _prometheus_config, _prometheus_options),
    Command("profile", "hardware profiles: list, show, fit to measurements",
            "Hardware profiles are TOML files of physical parameters; --profile (bench, "
            "replay, sweep) and the daemon's dma.profile take a built-in name or such a file.",
            commands=_profile_commands),
)


# --- the frame: parser, errors, exit statuses, outputs ---------------------------------


def _add(sub, cmd: Command, prog: str) -> None:
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description,
                       epilog=cmd.epilog)
    children = cmd.subcommands()
    if children:
        group = p.add_subparsers(dest=f"{cmd.name}_command", required=True,
                                 metavar=cmd.metavar, parser_class=_args.Parser)
        for child in children:
            _add(group, child, prog)
        return
    _args.add_options(p, cmd.declared())
    if cmd.json:
        p.add_argument("--json", default=None, metavar="FILE", help=cmd.json)
    if cmd.plot:
        p.add_argument("--plot", default=None, metavar="FILE.png", help=cmd.plot)
    p.set_defaults(command=cmd, prog=prog)


def build_parser() -> argparse.ArgumentParser:
    p = _args.Parser(prog="migd", description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"migd {migd_version()}")
    sub = p.add_subparsers(dest="command_name", required=True, metavar="COMMAND",
                           parser_class=_args.Parser)
    for cmd in COMMANDS:
        _add(sub, cmd, f"migd {cmd.name}")
    return p


def _execute(cmd: Command, args: argparse.Namespace) -> int:
    """Run ``cmd`` and print its result; the only place errors are printed
    (one line, ``migd COMMAND: ...``) and mapped to exit statuses: 2 for bad
    input (ValueError, ``--json``/``--plot`` into no directory, checked before
    the work), 1 for a failed run (:class:`Failed`, OSError), 130 for Ctrl-C."""
    call = Call(args.prog)
    json_path, plot_path = getattr(args, "json", None), getattr(args, "plot", None)
    try:
        try:
            _args.check_output(json_path, "--json")
            _args.check_output(plot_path, "--plot")
            values = _args.option_values(args, cmd.declared())
            result = cmd.run(values, call)
        finally:
            call.progress.clear()
        if isinstance(result, int):
            return result
        text = result.table()
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        if json_path:
            result.write_json(json_path)
    except ValueError as e:
        return _fail(call, e, 2)
    except _args.Failed as e:
        return _fail(call, e, e.status)
    except OSError as e:
        return _fail(call, e, 1)
    except KeyboardInterrupt:
        return _fail(call, "interrupted", 130)
    if plot_path:
        try:
            cmd.draw(result, plot_path, values)
        except (OSError, ValueError) as e:
            return _fail(call, f"cannot write the plot: {e}", 1)
    return 0 if getattr(result, "ok", True) else 1


def _fail(call: Call, error, status: int) -> int:
    print(f"{call.prog}: {error}", file=sys.stderr, flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _ensure_streaming_copies()
    args = build_parser().parse_args(argv)
    return _execute(args.command, args)
