"""The trace ring buffer: ``trace`` (a snapshot) and ``trace_pipe`` (a consuming read).

As kernel/trace/ring_buffer.c keeps binary entries and trace.c formats them
when read, the ring keeps ``(event, seconds, values)`` tuples (~1 us to append
on the engine's thread) and a reader formats them; a formatted line is kept,
so each entry is formatted once however often ``trace`` is read.  Formatting
at append time was rejected: the engine's thread would pay ~3 us per event
for lines nobody may read.  A full ring drops its oldest entry (counted as an
overrun, as the kernel's overwrite mode does).

Writers run on the trio thread; readers on libfuse's threads.  A blocked
``trace_pipe`` read holds one of them, so at most :data:`MAX_PIPE_WAITERS` wait
at once (one more read is EBUSY at once).  It waits at most :data:`WAIT_SLICE`
at a time, then asks whether its reader was interrupted (a signal: the read
ends with EINTR, as ``tracing_wait_pipe()`` does on a pending signal) and
ends with EOF once :meth:`TraceRing.close` ran (at unmount): a libfuse worker
stuck in a wait would keep the unmount from finishing and its reader
unkillable.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from collections.abc import Callable

from ._events import Event

#: Entries kept at most: ~600 KB of text (the kernel's default is 1.4 MB a CPU).
RING_ENTRIES = 4096
#: Longest a blocked reader sleeps before it looks for a signal or ``closed`` again.
WAIT_SLICE = 0.05
#: Blocked ``trace_pipe`` reads at once; each holds a libfuse thread.  The
#: kernel has no such bound (a blocked reader costs it a wait queue entry).
MAX_PIPE_WAITERS = 8
#: The task column: the daemon's name (``comm``) and pid.
COMM = "migd"

# kernel/trace/trace.c, print_event_info and print_func_help_header_irq with
# the irq-info flag set and no tgid (the default): "%.*s" are 2 spaces there.
_HELP = """\
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def format_line(event: Event, seconds: float, values: tuple, pid: int) -> str:
    """One line as trace_output.c writes it: ``trace_print_context``
    (``"%16s-%-7d "``, ``"[%03d] "``, the five lat flags, ``" %5lu.%06lu: "``)
    then ``"<event>: "`` and the event's TP_printk text."""
    us = (round(seconds * 1e9) + 500) // 1000  # ns2usecs(): ns rounded to the nearest us
    return (f"{COMM:>16}-{pid:<7} [000] ..... {us // 1_000_000:5d}.{us % 1_000_000:06d}: "
            f"{event.name}: {event.payload(values)}\n")


class TraceRing:
    def __init__(self, entries: int = RING_ENTRIES, pid: int | None = None) -> None:
        self.capacity = entries
        self.pid = os.getpid() if pid is None else pid
        #: Entries dropped because the ring was full.
        self.overrun = 0
        self._lines: deque[str] = deque()  # formatted, older than every raw entry
        self._raw: deque[tuple[Event, float, tuple]] = deque()
        self._cond = threading.Condition()
        self._format_lock = threading.Lock()  # one formatter at a time keeps the order
        self._closed = False
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._lines) + len(self._raw)

    # -- writer (engine thread) ----------------------------------------------------

    def append(self, event: Event, seconds: float, values: tuple) -> None:
        with self._cond:
            if len(self._lines) + len(self._raw) >= self.capacity:
                (self._lines or self._raw).popleft()
                self.overrun += 1
            self._raw.append((event, seconds, values))
            self._cond.notify_all()

    def clear(self) -> None:
        """``tracing_reset_online_cpus``: what ``> trace`` (O_TRUNC) does."""
        with self._format_lock, self._cond:
            self._lines.clear()
            self._raw.clear()
            self.overrun = 0

    def close(self) -> None:
        """Wake every blocked reader with EOF, now and later (at unmount)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- readers (libfuse threads) ------------------------------------------------

    def _format_pending(self) -> None:
        """Format the raw entries into lines; caller holds ``_format_lock``."""
        with self._cond:
            raw = list(self._raw)
            self._raw.clear()
        if not raw:
            return
        lines = [format_line(e, t, v, self.pid) for e, t, v in raw]
        with self._cond:
            self._lines.extend(lines)
            while len(self._lines) + len(self._raw) > self.capacity:
                self._lines.popleft()
                self.overrun += 1

    def snapshot(self, nr_cpus: int) -> str:
        """The ``trace`` file: ``print_trace_header`` for the nop tracer, then
        every line in the ring, which stays there."""
        with self._format_lock:
            self._format_pending()
            with self._cond:
                lines = list(self._lines)
                overrun = self.overrun
        n = len(lines)
        head = (f"# tracer: nop\n#\n# entries-in-buffer/entries-written: {n}/{n + overrun}"
                f"   #P:{nr_cpus}\n{_HELP}")
        return head + "".join(lines)

    def read_pipe(self, size: int, block: bool = True,
                  interrupted: Callable[[], bool] = lambda: False) -> bytes:
        """``tracing_read_pipe``: whole lines up to ``size`` bytes, consumed.

        Blocks while the ring is empty (unless ``block`` is False: EAGAIN, as
        for O_NONBLOCK) until a line comes, ``interrupted()`` turns true
        (EINTR) or the ring is closed (b"", EOF).  EBUSY when
        :data:`MAX_PIPE_WAITERS` reads already wait."""
        while True:
            with self._cond:
                if not self._raw and not self._lines:
                    self._wait_for_entries(block, interrupted)
                    if self._closed and not self._raw and not self._lines:
                        return b""
            with self._format_lock:
                self._format_pending()
                with self._cond:
                    out, n = [], 0
                    while self._lines and n + len(self._lines[0]) <= size:
                        line = self._lines.popleft()
                        out.append(line)
                        n += len(line)
                    if not out and self._lines:  # a line longer than the read: split it
                        line = self._lines.popleft()
                        out.append(line[:size])
                        self._lines.appendleft(line[size:])
            if out:  # else another reader took it all: wait again, never a false EOF
                return "".join(out).encode()

    def _wait_for_entries(self, block: bool, interrupted: Callable[[], bool]) -> None:
        """``tracing_wait_pipe()``; the caller holds ``_cond``."""
        if self._closed:
            return
        if not block:
            raise OSError(errno.EAGAIN, "trace_pipe is empty")
        if self._waiters >= MAX_PIPE_WAITERS:
            raise OSError(errno.EBUSY, f"{MAX_PIPE_WAITERS} trace_pipe readers already wait")
        self._waiters += 1
        try:
            while not self._raw and not self._lines and not self._closed:
                if interrupted():
                    raise OSError(errno.EINTR, "trace_pipe read interrupted")
                self._cond.wait(WAIT_SLICE)
        finally:
            self._waiters -= 1
