"""The ``trace_pipe`` buffer: migration events, bounded, read by blocking readers.

Like tracefs: while ``events/migrate/enable`` is 1, each batch becomes one
``mm_migrate_pages`` line; a read blocks until there is something, consumes
what it returns, and a full buffer drops the oldest lines (counted as lost).
The engine appends from the trio thread; readers block on libfuse threads.
"""

from __future__ import annotations

import os
import threading
from collections import deque

from ..migrate import BatchRecords

#: Lines kept at most (the ring buffer's size).
TRACE_LINES = 4096


class TraceBuffer:
    def __init__(self) -> None:
        self.enabled = True
        self.lost = 0
        self._lines: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._pid = os.getpid()

    def on_batches(self, records: BatchRecords) -> None:
        if not self.enabled:
            return
        lines = []
        for r in records:
            lines.append(
                f"{'migd':>16}-{self._pid:<7} [000] ..... {r.end:.6f}: mm_migrate_pages: "
                f"nr_succeeded={r.nr_succeeded} nr_failed={r.nr_failed} "
                f"nr_pages={r.nr_pages} migrator={r.migrator} mode={r.mode} "
                f"reason={r.reason}\n".encode())
        with self._cond:
            for line in lines:
                if len(self._lines) >= TRACE_LINES:
                    self._lines.popleft()
                    self.lost += 1
                self._lines.append(line)
            self._cond.notify_all()

    def read(self, size: int) -> bytes:
        """Block until lines are there (or the buffer closes); return up to ``size``."""
        with self._cond:
            while not self._lines and not self._closed:
                self._cond.wait()
            out = bytearray()
            while self._lines and len(out) + len(self._lines[0]) <= size:
                out += self._lines.popleft()
            if not out and self._lines:  # a line longer than the read: split it
                line = self._lines.popleft()
                out += line[:size]
                self._lines.appendleft(line[size:])
            return bytes(out)

    def close(self) -> None:
        """Wake every reader with EOF (at unmount)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
