"""``migd run``: one trio program wiring the emulated kernel and its surfaces.

Start-up: configuration, the System (machine, engine, DMA, migrators), the
signal receiver (entered before libfuse mounts, so libfuse leaves SIGTERM,
SIGINT and SIGHUP to us), a stale mount cleared, the tree mounted on a worker
thread, mutators and workloads started, ``READY=1``.  SIGTERM/SIGINT: stop
starting work, let in-flight batches end (the engine stops at the next batch
boundary; nothing is left unmapped), unmount, verify every page, exit 0.
SIGHUP, SIGUSR2 and SIGPIPE are logged and ignored; SIGUSR1 logs the state.
A tree unmounted from outside (``fusermount -u``) ends the daemon the same
way, with exit status 1, so that systemd restarts it: a daemon nobody can
reach would otherwise look healthy to the watchdog.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .._self import this_migd
from ..metrics import serve_metrics
from ..migrate import compile_cache, warm_up
from ..mm import madvise_populate_write
from ..sysfs import clear_stale_mount, is_mounted, serve, unmount, wait_mounted
from ._attrs import COMPILE_READ_PATHS, build_tree, compile_read_paths
from ._config import Config
from ._log import configure_logging
from ._notify import sd_notify, watchdog_interval
from ._system import System
from ._workloads import run_workloads

#: Longest a shutdown waits for in-flight batches before unmounting anyway.
SHUTDOWN_GRACE = 3.0
#: Longest a start waits for the child compiling the read paths (then the
#: daemon compiles them itself).
COMPILE_CHILD_TIMEOUT = 120.0
#: What each warm-up stage asks systemd for on a cold compile cache
#: (EXTEND_TIMEOUT_USEC): a stage compiles for seconds on a loaded machine.
WARM_UP_EXTEND_USEC = 30_000_000
#: How often the mount table is read for the tree (an unmount from outside).
MOUNT_POLL = 0.5
#: Signals that only log: SIGHUP (no config reload), SIGUSR2, SIGPIPE.
_IGNORED = (signal.SIGHUP, signal.SIGUSR2, signal.SIGPIPE)


async def _watchdog(interval: float) -> None:
    while True:
        sd_notify("WATCHDOG=1")
        await trio.sleep(interval)


async def _fault_reporter(sys: System, period: float = 1.0) -> None:
    """Turn counters into events once a period: faults injected, fallback bursts."""
    seen = sys.faults.injected()
    fallbacks = dict(sys.engine.statistics().fallbacks)
    while True:
        await trio.sleep(period)
        now = sys.faults.injected()
        for point, n in now.items():
            if n > seen[point]:
                sys.emit("fault_injected", point=point, count=n - seen[point])
        seen = now
        fb = sys.engine.statistics().fallbacks
        burst = {c: n - fallbacks.get(c, 0) for c, n in fb.items() if n > fallbacks.get(c, 0)}
        if burst:
            sys.emit("fallback_burst", folios=burst)
        fallbacks = dict(fb)


async def _serve_tree(sys: System, tree, mountpoint: str, token, on_lost) -> None:
    """libfuse's loop on a worker thread.  Once the tree is being unmounted, how
    that loop ends is not an error: with a reader's request in flight at the
    unmount, libfuse can report one (fusepy raises RuntimeError), which would
    otherwise fail a clean shutdown.  A loop that ends before that was
    unmounted from outside: ``on_lost()``."""
    try:
        await trio.to_thread.run_sync(serve, tree, mountpoint, token, abandon_on_cancel=True)
    except RuntimeError:
        if not sys.engine.stopping:
            raise
    if not sys.engine.stopping:
        on_lost()


async def _populate_arena(sys: System) -> None:
    """Back the arena a System built with ``populate=False`` left to first
    touch, a chunk at a time on a worker thread (no GIL held), once the tree
    serves: on a host that took idle guest memory back, the 1 GiB of the
    default config costs ~3 s of faults, which a start waited for.  Copies
    into pages not yet backed meanwhile fault them in themselves; so do all
    of them where the kernel lacks the advice (``arena_not_backed``)."""
    memory = sys.machine.memory
    chunks = memory.arena_chunks()
    for addr, nbytes in chunks:
        err = await trio.to_thread.run_sync(madvise_populate_write, addr, nbytes)
        if err:
            sys.emit("arena_not_backed", error=os.strerror(err), backed_bytes=addr - chunks[0][0])
            return
    memory.populated = True


async def _watch_mount(sys: System, mountpoint: str, on_lost) -> None:
    """``on_lost()`` once the tree leaves the mount table while the daemon
    runs (a lazy unmount can leave libfuse's loop waiting on open files)."""
    while is_mounted(mountpoint):
        await trio.sleep(MOUNT_POLL)
    if not sys.engine.stopping:
        on_lost()


async def start_compile_child() -> trio.Process | None:
    """On a cold compile cache that can be written, a child compiling the
    read paths and the warm-up's last stage into it (``COMPILE_READ_PATHS``),
    on the other CPU while this process compiles the rest; None otherwise (a read-only cache would
    only be compiled into twice)."""
    cache, _, cached = compile_cache()
    if cached or not os.access(cache if cache.is_dir() else cache.parent, os.W_OK):
        return None
    python, env = this_migd()
    return await trio.lowlevel.open_process(
        [*python, "-c", COMPILE_READ_PATHS], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)


@asynccontextmanager
async def system_running(sys: System, mountpoint: str, on_tree_lost=lambda: None,
                         compile_child: trio.Process | None = None,
                         ) -> AsyncIterator[trio.Nursery]:
    """The System live: DMA channels, the tree mounted, mutators and workloads.

    Yields the nursery they run in, for the caller's own tasks.
    ``on_tree_lost()`` is called (once) if the tree is unmounted from outside.
    On exit, even when cancelled: the engine stops (batches in flight finish,
    see ``MigrationEngine.stop``), workloads get :data:`SHUTDOWN_GRACE` to
    return, blocked ``trace_pipe`` readers get EOF, the tree is deactivated
    (whatever reaches it now is ENODEV, as for a removed kernfs node) and
    unmounted, and every task is cancelled.  Shared by ``migd run`` and ``migd
    soak`` so that the soak exercises the daemon's own shutdown.
    ``compile_child``: :func:`start_compile_child`'s, started before the
    System was built (``migd run``), else started here on a cold cache.
    """
    _, _, cached = compile_cache()
    tree = build_tree(sys)
    token = trio.lowlevel.current_trio_token()
    sys.tracing.boot = trio.current_time()  # the boot clock counts from the daemon's start

    def progress(stage: str) -> None:
        if not cached:
            sys.emit("compiling", stage=stage)
            sd_notify(f"EXTEND_TIMEOUT_USEC={WARM_UP_EXTEND_USEC}")
    child = compile_child
    try:
        if child is None:
            child = await start_compile_child()
        await warm_up(progress)  # compiled paths loaded before anything is served
        # its cache files, or compiled here if it failed or took too long;
        # systemd's start timeout extended at each slice of the wait
        deadline = trio.current_time() + COMPILE_CHILD_TIMEOUT
        while child is not None and child.returncode is None \
                and trio.current_time() < deadline:
            progress("the read paths")
            with trio.move_on_after(WARM_UP_EXTEND_USEC / 2e6):
                await child.wait()
    finally:
        if child is not None and child.returncode is None:
            with trio.CancelScope(shield=True):  # reaped, not left a zombie
                child.kill()
                await child.wait()
    if child is None or child.returncode != 0:
        progress("the read paths")
    compile_read_paths()
    # What is left after a collection lives as long as the daemon: out of the
    # collector's sight, a full collection no longer walks it (55 ms with the
    # GIL held, every minute or so of a soak, where every reader waited).
    gc.collect()
    gc.freeze()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sys.dma.run)
        nursery.start_soon(sys.prezero.run)
        lost = trio.Event()

        def tree_lost() -> None:
            if not lost.is_set():
                lost.set()
                on_tree_lost()
        nursery.start_soon(_serve_tree, sys, tree, mountpoint, token, tree_lost)
        try:
            await wait_mounted(mountpoint)
            if not sys.machine.memory.populated:  # once the tree serves
                nursery.start_soon(_populate_arena, sys)
            nursery.start_soon(_watch_mount, sys, mountpoint, tree_lost)
            for i, t in enumerate(sys.tenants):
                nursery.start_soon(sys.machine.run_mutator, t, sys.cfg.daemon["seed"] + i)
            workloads_done = trio.Event()

            async def workloads() -> None:
                try:
                    await run_workloads(sys)
                finally:
                    workloads_done.set()
            nursery.start_soon(workloads)
            yield nursery
        finally:
            with trio.CancelScope(shield=True):
                sys.engine.stop()
                with trio.move_on_after(SHUTDOWN_GRACE):
                    await workloads_done.wait()
                sys.tracing.ring.close()  # blocked trace_pipe readers: EOF
                tree.deactivate()
                await trio.to_thread.run_sync(unmount, mountpoint)
            nursery.cancel_scope.cancel()


def _log_state(sys: System, log) -> None:
    """SIGUSR1: what the daemon is doing, one line."""
    st = sys.engine.statistics()
    log.info("state", migrator=sys.active_migrator(), profile=sys.profile.name,
             pgmigrate_success=st.vmstat.get("pgmigrate_success", 0),
             pgmigrate_fail=st.vmstat.get("pgmigrate_fail", 0),
             pages_in_flight=st.pages_in_flight, batches=sum(st.batches.values()),
             fallbacks=dict(st.fallbacks))


async def _until_stopped(signals, sys: System, log, tree_lost: trio.Event) -> bool:
    """Serve signals until SIGTERM/SIGINT (False) or the tree is lost (True)."""
    async with trio.open_nursery() as nursery:
        outcome = []

        async def watch_tree() -> None:
            await tree_lost.wait()
            outcome.append(True)
            nursery.cancel_scope.cancel()
        nursery.start_soon(watch_tree)
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                _log_state(sys, log)
            elif signum in _IGNORED:
                log.info("signal_ignored", signal=name)
            else:
                log.info("stopping", signal=name)
                break
        nursery.cancel_scope.cancel()
    return bool(outcome)


async def serve_daemon(cfg: Config, mountpoint: str, metrics: str, log) -> int:
    t_start = time.monotonic()
    child = await start_compile_child()  # beside the System's own compiling
    try:
        return await _serve(cfg, mountpoint, metrics, log, t_start, child)
    finally:
        if child is not None and child.returncode is None:  # a start that failed early
            with trio.CancelScope(shield=True):
                child.kill()
                await child.wait()


async def _serve(cfg: Config, mountpoint: str, metrics: str, log, t_start: float,
                 child: trio.Process | None) -> int:
    sys = System(cfg, populate=False)  # backed once it serves (_populate_arena)
    sys.events.append(lambda event, fields: (
        log.error if event in ("migrator_error", "dma_unreported_error")
        else log.info)(event, **fields))
    if cfg.migrator["active"] != "none":
        await sys.set_migrator(cfg.migrator["active"])
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                                   *_IGNORED) as signals:
        try:
            if clear_stale_mount(mountpoint):
                log.info("stale_mount_cleared", mount=mountpoint)
        except OSError as e:
            log.error("mount_failed", mount=mountpoint, error=str(e))
            return 1
        try:
            http, port = serve_metrics(sys, metrics)
        except (OSError, ValueError) as e:
            log.error("metrics_failed", address=metrics, error=str(e))
            return 1
        tree_lost = trio.Event()
        try:
            async with system_running(sys, mountpoint, tree_lost.set, child) as nursery:
                nursery.start_soon(_fault_reporter, sys)
                interval = watchdog_interval()
                if interval:
                    nursery.start_soon(_watchdog, interval)
                log.info("ready", mount=mountpoint, metrics_port=port, profile=sys.profile.name,
                         migrator=sys.active_migrator(), tenants=len(sys.tenants),
                         startup_seconds=round(time.monotonic() - t_start, 3))
                sd_notify("READY=1")
                if await _until_stopped(signals, sys, log, tree_lost):
                    log.error("tree_unmounted", mount=mountpoint)
                sd_notify("STOPPING=1")
        finally:
            http.shutdown()
    report = sys.machine.check_integrity()
    log.info("stopped", integrity_ok=report.ok, **vars(report))
    return 0 if report.ok and not tree_lost.is_set() else 1


def run_daemon(cfg: Config, mountpoint: str | None = None, metrics: str | None = None) -> int:
    log = configure_logging(cfg.daemon["log_format"])
    mountpoint = mountpoint or cfg.daemon["mount"]
    metrics = metrics or cfg.daemon["metrics"]
    log.info("starting", mount=mountpoint, metrics=metrics, pid=os.getpid())
    cache, kernels, cached = compile_cache()
    if not cached:  # first start of this version: say why it takes a while
        log.info("compiling", kernels=kernels, cache=str(cache),
                 note="first start of this migd version only (migd warm-up compiles ahead)")
    return trio.run(serve_daemon, cfg, mountpoint, metrics, log)
