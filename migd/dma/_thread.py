"""The OS thread a channel copies on (real clock): one hand-off per slice.

A real DMA engine copies while the CPU does other things; here a channel's
queued slice is copied by a compiled, GIL-free kernel on the channel's own
thread.  The hand-off is a semaphore release one way and one
``run_sync_soon`` the other: ~23 us round trip on this 2-core machine,
against ~41 us for ``trio.to_thread.run_sync`` (its capacity limiter, thread
cache and job wrapping; measured with a no-op job, 500 round trips each).
Rejected: polling a done flag from the event loop (~11 us median but it
burns the loop's core and its mean under load was worse, 18 us).

The wait is shielded from cancellation: no DMA write may land after the
caller's CPU fallback, so a copy that started is always waited for (it is
bounded: one slice, milliseconds).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import trio


class CopyThread:
    """A daemon thread that runs one job at a time for a trio task."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._go = threading.Semaphore(0)
        self._job: tuple | None = None
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                return
            fn, args, token, done, box = job
            try:
                fn(*args)
            except BaseException as exc:  # handed back to the waiting task
                box.append(exc)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

    async def run(self, fn: Callable[..., None], *args) -> None:
        """Run ``fn(*args)`` on the thread and wait for it (uncancellable)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        done = trio.Event()
        box: list[BaseException] = []
        self._job = (fn, args, trio.lowlevel.current_trio_token(), done, box)
        self._go.release()
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
        """Let the thread end (after its current job, if any)."""
        if self._thread is not None:
            self._job = None
            self._go.release()
            self._thread = None
