"""Where cells run: in this process, in local worker processes, or on a Dask
distributed cluster.  Each executor takes ``(key, params)`` items and yields
``(key, row)`` as cells finish, in any order; the driver alone writes the
results, so a cell a lost worker was running and Dask ran again is still
recorded exactly once.

Local processes use ``concurrent.futures`` with the fork start method: a
spawned worker spends ~2 s importing numpy, numba and trio before its first
cell; a forked one starts with them.  Dask was not made the only executor:
a laptop run should not need a scheduler, and a ProcessPoolExecutor does the
local case in the standard library.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._cell import run_cell, warm_up

#: How long a scheduler may take to answer before it counts as unreachable.
CONNECT_TIMEOUT = 5.0

Item = tuple[str, dict[str, Any]]


class LostWorker(RuntimeError):
    """A local worker process died (killed, out of memory): the pool is gone.
    Dask reruns a lost worker's cells itself; a ProcessPoolExecutor cannot."""


class InProcess:
    name = "in-process"
    workers = 1

    def map(self, items: Iterable[Item]) -> Iterator[tuple[str, dict]]:
        for key, params in items:
            yield key, run_cell(params)

    def close(self) -> None:
        pass


class LocalProcesses:
    """``workers`` forked processes, at most two cells queued per worker (so a
    Ctrl-C leaves few cells started for nothing)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        warm_up()  # compiled once here, inherited by every forked worker
        ctx = multiprocessing.get_context("fork")
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx)

    def map(self, items: Iterable[Item]) -> Iterator[tuple[str, dict]]:
        try:
            yield from self._map(items)
        except BrokenProcessPool as e:
            raise LostWorker(f"a local worker process died ({e})") from None

    def _map(self, items: Iterable[Item]) -> Iterator[tuple[str, dict]]:
        it = iter(items)
        running = {}
        while True:
            while len(running) < 2 * self.workers:
                nxt = next(it, None)
                if nxt is None:
                    break
                running[self.pool.submit(run_cell, nxt[1])] = nxt[0]
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                yield running.pop(f), f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """A dask.distributed ``Client`` on ``address`` (``tcp://HOST:PORT``), or on
    a fresh ``LocalCluster`` of ``workers`` processes for ``local``.  Tasks
    are keyed by the cell's key: Dask reruns a task whose worker was lost
    (``distributed.scheduler.allowed-failures``), and the key makes the rerun
    the same task."""

    name = "dask"

    def __init__(self, address: str, workers: int | None = None, *,
                 processes: bool = True) -> None:
        from distributed import Client, LocalCluster

        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1,
                                        threads_per_worker=1, processes=processes,
                                        dashboard_address=None)
            address = self.cluster
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            self.close()
            raise ValueError(f"--scheduler: cannot reach {address}: {e}") from None
        self.workers = len(self.client.scheduler_info().get("workers", {})) or 1
        # Every worker compiles the engine's paths now, side by side, rather
        # than each on its first cell (workers joining later do it then).
        try:
            self.client.run(warm_up)
        except BaseException:
            self.close()
            raise

    def map(self, items: Iterable[Item]) -> Iterator[tuple[str, dict]]:
        from distributed import as_completed

        futures = {}
        for key, params in items:
            futures[self.client.submit(run_cell, params, key=f"migd-cell-{key}",
                                       pure=False)] = key
        for f in as_completed(futures):
            yield futures[f], f.result()

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close(timeout=10)
        if self.cluster is not None:
            self.cluster.close(timeout=10)
            self.cluster = None


def parse_scheduler(text: str) -> str:
    """A dask.distributed scheduler address, or ``local`` for a LocalCluster."""
    if text != "local" and not text.startswith(("tcp://", "tls://", "inproc://")):
        raise ValueError(f"--scheduler: expected tcp://HOST:PORT or local, got {text!r}")
    return text


def parse_workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--workers: not a number: {text!r}") from None
    return _check_workers(n)


def _check_workers(n: int) -> int:
    if n < 0:
        raise ValueError(f"--workers must be 0 or more: {n}")
    return n


def executor(scheduler: str | None, workers: int | None = None):
    """The executor the command line asks for; ValueError (one line) when the
    scheduler cannot be reached or the worker count is wrong."""
    if workers is not None:
        _check_workers(workers)
    if scheduler is not None:
        return DaskExecutor(parse_scheduler(scheduler), workers)
    n = (os.cpu_count() or 1) if workers is None else workers
    return InProcess() if n <= 1 else LocalProcesses(n)
