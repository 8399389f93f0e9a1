"""The OS thread a channel copies on (real clock): one hand-off per slice.

A real DMA engine copies while the CPU does other things; here a channel's
queued slice is copied by compiled, GIL-free code on the channel's own
thread.  The thread lives in ``_chanctl.dma_chan_serve``: slices posted by
the engine's compiled fast path are copied there without Python; a job of
the channel's trio task (its whole queue) is asked for with ``PYJOB`` one way
and answered with one ``run_sync_soon`` the other: ~25 us round trip on this
2-core machine, against ~41 us for ``trio.to_thread.run_sync`` (its capacity
limiter, thread cache and job wrapping; measured with a no-op job, 500 round
trips each).  Rejected: polling a done flag from the event loop (~11 us
median but it burns the loop's core and its mean under load was worse, 18 us).

The wait is shielded from cancellation: no DMA write may land after the
caller's CPU fallback, so a copy that started is always waited for (it is
bounded: one slice, milliseconds).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import numpy as np
import trio

from ._chanctl import (
    CPUCLOCK,
    IDLE_SPIN_NS,
    PYJOB,
    SERVE_STOP,
    STOP,
    dma_chan_kick,
    dma_chan_serve,
)


class CopyThread:
    """A daemon thread serving one channel's control row ``ctl``: compiled
    slices, and one Python job at a time for a trio task."""

    def __init__(self, name: str, ctl: np.ndarray) -> None:
        self.name = name
        self.ctl = ctl
        self._addr = int(ctl.ctypes.data)
        self._job: tuple | None = None
        self._thread: threading.Thread | None = None
        self._stopped: threading.Thread | None = None  # told to stop, maybe not yet ended

    def start(self) -> None:
        """Start the thread if it is not running (first use, or in a forked child)."""
        if self._thread is None or not self._thread.is_alive():
            if self._stopped is not None:  # never two threads on one control row
                self._stopped.join(10.0)
                if self._stopped.is_alive():
                    raise RuntimeError(f"{self.name}: the previous copy thread has not ended")
                self._stopped = None
            self.ctl[STOP] = 0
            self.ctl[PYJOB] = 0
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
            # waiters look at the thread's CPU-time clock (is it on a CPU?)
            self.ctl[CPUCLOCK] = time.pthread_getcpuclockid(self._thread.ident)

    def _loop(self) -> None:
        while dma_chan_serve(self._addr, IDLE_SPIN_NS) != SERVE_STOP:
            job, self._job = self._job, None
            self.ctl[PYJOB] = 0
            if job is None:
                continue
            fn, args, token, done, box = job
            try:
                fn(*args)
            except BaseException as exc:  # handed back to the waiting task
                box.append(exc)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

    async def run(self, fn: Callable[..., None], *args) -> None:
        """Run ``fn(*args)`` on the thread and wait for it (uncancellable)."""
        self.start()
        done = trio.Event()
        box: list[BaseException] = []
        self._job = (fn, args, trio.lowlevel.current_trio_token(), done, box)
        dma_chan_kick(self._addr, PYJOB)
        thread = self._thread
        with trio.CancelScope(shield=True):
            while not done.is_set():
                with trio.move_on_after(1.0):
                    await done.wait()
                if not done.is_set() and not thread.is_alive():  # never hang on a dead one
                    raise RuntimeError(f"{self.name}: the copy thread died")
        if box:
            raise box[0]

    def stop(self) -> None:
        """Let the thread end (after its current slice or job, if any)."""
        if self._thread is not None:
            dma_chan_kick(self._addr, STOP)
            self._stopped, self._thread = self._thread, None
