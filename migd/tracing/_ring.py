"""The trace ring buffer: ``trace`` (a snapshot), ``trace_pipe`` (a consuming read),
``per_cpu/cpuN/stats`` and the ``events/header_*`` files that describe its pages.

As kernel/trace/ring_buffer.c keeps binary entries and trace.c formats them
when read, the ring keeps numbers in arrays (an entry's event, time and
TP_printk values, strings as ids: ~2.5 us to append on the engine's thread)
and a reader formats them in compiled code without the GIL (``_format``:
a full ring of 4096 lines, 1 MB, in ~2 ms).  Rejected: tuples formatted by
Python's ``%`` (~1.5 us a line with the GIL, each open of ``trace`` formatting
the entries since the last: the slowest reads of a soak, 10-40 ms), and
formatting at append time (the engine's thread paying for lines nobody may
read).  A full ring drops its oldest entry (counted as an overrun, as the
kernel's overwrite mode does).

Writers run on the trio thread; readers on libfuse's threads.  A blocked
``trace_pipe`` read holds one of them, so at most :data:`MAX_PIPE_WAITERS` wait
at once (one more read is EBUSY at once).  It waits at most :data:`WAIT_SLICE`
at a time, then asks whether its reader was interrupted (a signal: the read
ends with EINTR, as ``tracing_wait_pipe()`` does on a pending signal) and
ends with EOF once :meth:`TraceRing.close` ran (at unmount): a libfuse worker
stuck in a wait would keep the unmount from finishing and its reader
unkillable.

Every event is recorded on CPU 0 (the engine is one thread): the other CPUs'
``per_cpu`` files read an empty buffer, whose ``trace_pipe``
(:meth:`TraceRing.read_idle`) waits as an empty CPU's does.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

import numpy as np

from ._events import Event
from ._format import MAX_ARGS, LineFormat

#: Entries kept at most: ~600 KB of text (the kernel's default is 1.4 MB a CPU).
RING_ENTRIES = 4096
#: Longest a blocked reader sleeps before it looks for a signal or ``closed`` again.
WAIT_SLICE = 0.05
#: Blocked ``trace_pipe`` reads at once; each holds a libfuse thread.  The
#: kernel has no such bound (a blocked reader costs it a wait queue entry).
MAX_PIPE_WAITERS = 8
#: The task column: the daemon's name (``comm``) and pid.
COMM = "migd"

#: x86_64's PAGE_SIZE, and ``BUF_PAGE_HDR_SIZE``: offsetof(struct buffer_data_page, data).
PAGE_SIZE = 4096
BUF_PAGE_HDR_SIZE = 16
#: include/linux/ring_buffer.h, ``enum ring_buffer_type``.
RINGBUF_TYPE_DATA_TYPE_LEN_MAX = 28
RINGBUF_TYPE_PADDING, RINGBUF_TYPE_TIME_EXTEND, RINGBUF_TYPE_TIME_STAMP = 29, 30, 31
#: ``RB_MAX_SMALL_DATA``: a longer entry stores its length in ``array[0]``.
RB_MAX_SMALL_DATA = 4 * RINGBUF_TYPE_DATA_TYPE_LEN_MAX


def page_header() -> str:
    """``events/header_page``: ``ring_buffer_print_page_header()`` for x86_64
    (``struct buffer_data_page``: u64 time_stamp, local_t commit, data), as
    kernels since 6.2 print it: built with -funsigned-char, ``char`` is
    unsigned.  ``overwrite`` is the commit field's top bit, hence its odd
    offset and size, as the kernel prints them."""
    return (f"\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
            f"\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n"
            f"\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
            f"\tfield: char data;\toffset:{BUF_PAGE_HDR_SIZE};"
            f"\tsize:{PAGE_SIZE - BUF_PAGE_HDR_SIZE};\tsigned:0;\n")


def entry_header() -> str:
    """``events/header_event``: ``ring_buffer_print_entry_header()``."""
    return ("# compressed entry header\n"
            "\ttype_len    :    5 bits\n"
            "\ttime_delta  :   27 bits\n"
            "\tarray       :   32 bits\n"
            "\n"
            f"\tpadding     : type == {RINGBUF_TYPE_PADDING}\n"
            f"\ttime_extend : type == {RINGBUF_TYPE_TIME_EXTEND}\n"
            f"\ttime_stamp : type == {RINGBUF_TYPE_TIME_STAMP}\n"
            f"\tdata max type_len  == {RINGBUF_TYPE_DATA_TYPE_LEN_MAX}\n")


def rb_event_length(data: int) -> int:
    """Bytes an entry of ``data`` bytes takes in a page:
    ``rb_calculate_event_length()`` on x86_64 (4-byte alignment, no forced
    8-byte alignment); time extends and page padding are not counted."""
    data = max(data, 1)
    if data > RB_MAX_SMALL_DATA:
        data += 4  # the length in array[0]
    return (data + 4 + 3) // 4 * 4  # + RB_EVNT_HDR_SIZE, ALIGN(RB_ARCH_ALIGNMENT)


def _us(seconds: float) -> str:
    """``ns2usecs()`` printed as ``"%5llu.%06lu"``."""
    us = (round(seconds * 1e9) + 500) // 1000
    return f"{us // 1_000_000:5d}.{us % 1_000_000:06d}"

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


#: A line's context, ``trace_print_context()``: the task, its pid, the CPU, the
#: five lat flags and the time (seconds and microseconds).
_CONTEXT = f"{COMM:>16}-%-7d [000] ..... %5d.%06d: "
#: Each event's whole line as one ``%`` format (see :func:`format_line`).
_LINE_FORMATS: dict[Event, str] = {}


def format_line(event: Event, seconds: float, values: tuple, pid: int) -> str:
    """One line as trace_output.c writes it: ``trace_print_context``
    (``"%16s-%-7d "``, ``"[%03d] "``, the five lat flags, ``" %5lu.%06lu: "``)
    then ``"<event>: "`` and the event's TP_printk text, by one ``%`` format.
    The specification of the ring's compiled lines (``_format``), which a
    test holds to the same bytes."""
    fmt = _LINE_FORMATS.get(event)
    if fmt is None:
        fmt = _LINE_FORMATS[event] = _CONTEXT + f"{event.name}: {event.py_fmt}\n"
    if event.symbols:
        values = list(values)
        for i, symbols in event.symbols:
            values[i] = symbols.get(values[i], str(values[i]))
    us = (round(seconds * 1e9) + 500) // 1000  # ns2usecs()
    return fmt % (pid, us // 1_000_000, us % 1_000_000, *values)


class TraceRing:
    def __init__(self, entries: int = RING_ENTRIES, pid: int | None = None) -> None:
        self.capacity = entries
        self.pid = os.getpid() if pid is None else pid
        #: Entries dropped because the ring was full.
        self.overrun = 0
        #: Entries ``trace_pipe`` consumed (``ring_buffer_read_events_cpu``).
        self.read = 0
        #: Whether the daemon's comm was saved (``tracing_record_cmdline``): at
        #: its first event, and kept when the ring is cleared, as the kernel keeps it.
        self.cmdline_saved = False
        self.lines = LineFormat(_CONTEXT)
        # The entries, serials _first.._end-1 at serial % capacity: the event's
        # code, its time, its values (strings as ids) and rb_event_length.
        self._ev = np.zeros(entries, dtype=np.int64)
        self._secs = np.zeros(entries, dtype=np.float64)
        self._vals = np.zeros((entries, MAX_ARGS), dtype=np.int64)
        self._size = np.zeros(entries, dtype=np.int64)
        self._first = self._end = 0
        self._bytes = 0  # rb_event_length of the entries in the ring
        # The rest of the oldest entry's line, which a trace_pipe read split.
        self._partial: bytes | None = None
        self._gen = 0  # +1 when the oldest entry's text changes (a split) or at a clear
        # (gen, first, end, text, line ends) of the last open's entries: an
        # open formats only the entries recorded since (a full ring's 1 MB
        # each time was 2 ms, the slowest reads with one reader).
        self._last: tuple | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._waiters = 0

    def __len__(self) -> int:
        return self._end - self._first

    # -- writer (engine thread) ----------------------------------------------------

    def append(self, event: Event, seconds: float, values: tuple) -> None:
        size = rb_event_length(event.record_size(values))
        codes = self.lines.encode(event, values)
        with self._cond:
            i = self._take()
            self._ev[i], self._secs[i], self._size[i] = self.lines.code[event], seconds, size
            self._vals[i, :len(codes)] = codes
            self._bytes += size
            self._appended()

    def _take(self) -> int:
        """The slot of a new entry (the oldest dropped when full); under the lock."""
        if self._end - self._first >= self.capacity:
            self._bytes -= int(self._size[self._first % self.capacity])
            self._first += 1
            self.overrun += 1
            if self._partial is not None:
                self._partial = None
                self._gen += 1
        i = self._end % self.capacity
        self._end += 1
        return i

    def _appended(self) -> None:
        self.cmdline_saved = True
        if self._waiters:  # Condition.notify_all costs ~1 us even with none
            self._cond.notify_all()

    def clear(self) -> None:
        """``tracing_reset_online_cpus``: what ``> trace`` (O_TRUNC) does."""
        with self._cond:
            self._first = self._end
            self._partial = None
            self.overrun = self.read = self._bytes = 0
            self._gen += 1

    def wake(self) -> None:
        """``ring_buffer_wake_waiters()``: blocked readers look again."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every blocked reader with EOF, now and later (at unmount)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- readers (libfuse threads) ------------------------------------------------

    def _rows(self, first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of entries ``first`` .. ``first + n - 1``; under the lock."""
        idx = np.arange(first, first + n) % self.capacity
        return self._ev[idx], self._secs[idx], self._vals[idx]

    def _text(self, rows, partial: bytes | None) -> tuple[bytes, np.ndarray]:
        """The lines of ``rows`` (compiled, without the GIL) and where each
        ends, the first one's rest when a trace_pipe read split it."""
        return _split_first(*self.lines.format(*rows, self.pid), partial)

    def view(self, nr_cpus: int, lines: bool = True) -> bytes:
        """The ``trace`` file as an open file reads it: ``print_trace_header``
        for the nop tracer and the entries in the ring at open, which stay
        there (``seq_read()`` at any offset is a slice of them).
        ``tracing_open()`` stops the kernel's recording while the file is open
        (``pause-on-trace``); migd keeps recording.  ``lines`` False: an empty
        CPU's ``per_cpu/cpuN/trace`` (the header counts every CPU's entries)."""
        with self._cond:
            n, overrun, partial = len(self), self.overrun, self._partial
            first, end, gen, last = self._first, self._end, self._gen, self._last
            if last is not None and not (last[0] == gen and last[1] <= first <= last[2]):
                last = None  # a clear or a split since, or dropped past it
            rows = self._rows(last[2] if last else first, end - (last[2] if last else first)) \
                if lines else None
        head = (f"# tracer: nop\n#\n# entries-in-buffer/entries-written: {n}/{n + overrun}"
                f"   #P:{nr_cpus}\n{_HELP}").encode()
        if not lines:
            return head
        body, ends = self.lines.format(*rows, self.pid)  # only the entries since the last open
        if last is not None:
            _, was, _, old, old_ends = last
            cut = int(old_ends[first - was - 1]) if first > was else 0
            body = b"".join([memoryview(old)[cut:], body])
            ends = np.concatenate((old_ends[first - was:] - cut, ends + (len(old) - cut)))
        with self._cond:
            if self._gen == gen and (self._last is None or self._last[2] <= end):
                self._last = (gen, first, end, body, ends)
        return head + _split_first(body, ends, partial)[0]

    def snapshot(self, nr_cpus: int, lines: bool = True) -> str:
        """The whole ``trace`` file now (see :meth:`view`)."""
        return self.view(nr_cpus, lines).decode()

    def stats(self, now: float, cpu: int) -> str:
        """``per_cpu/cpuN/stats``: ``tracing_stats_read()`` for the boot clock
        (a clock in ns: times as ``"%5llu.%06lu"``).  ``bytes`` counts the
        entries' own lengths, without the page padding and time extends the
        kernel's count has; ``oldest event ts`` is the oldest entry's (0 in an
        empty ring; the kernel's is its oldest page's).  Nothing is ever
        dropped (the ring overwrites) and no commit overruns (one writer)."""
        with self._cond:
            if cpu != 0:
                entries = overrun = nbytes = read = 0
                oldest = 0.0
            else:
                entries, overrun, nbytes, read = len(self), self.overrun, self._bytes, self.read
                oldest = float(self._secs[self._first % self.capacity]) if entries else 0.0
        return (f"entries: {entries}\noverrun: {overrun}\ncommit overrun: 0\n"
                f"bytes: {nbytes}\noldest event ts: {_us(oldest)}\nnow ts: {_us(now)}\n"
                f"dropped events: 0\nread events: {read}\n")

    def read_pipe(self, size: int, block: bool = True,
                  interrupted: Callable[[], bool] = lambda: False,
                  stop: Callable[[], bool] = lambda: False) -> bytes:
        """``tracing_read_pipe``: whole lines up to ``size`` bytes, consumed.

        Blocks while the ring is empty (unless ``block`` is False: EAGAIN, as
        for O_NONBLOCK) until a line comes, ``interrupted()`` turns true
        (EINTR), ``stop()`` does (b"", EOF: tracing off after this reader
        read something, see ``Tracing.read_pipe``) or the ring is closed (EOF).
        EBUSY when :data:`MAX_PIPE_WAITERS` reads already wait."""
        while True:
            with self._cond:
                if not len(self):
                    self._wait(block, interrupted, lambda: len(self) or stop())
                    if not len(self) and (self._closed or stop()):
                        return b""
                # a line is longer than 32 bytes: these are all this read can take
                first, gen, partial = self._first, self._gen, self._partial
                rows = self._rows(first, min(len(self), size // 32 + 1))
            body, ends = self._text(rows, partial)  # formatted without the lock
            out = self._consume(body, ends, first, gen, size)
            if out:  # else another reader took it all: wait again, never a false EOF
                return out

    def _consume(self, body: bytes, ends: np.ndarray, first: int, gen: int, size: int) -> bytes:
        """Take the lines of entries ``first``.. that are still the oldest
        (``gen`` unchanged: no clear, no other reader's split), up to ``size``
        bytes, splitting a first line longer than that."""
        out, n = [], 0
        starts = np.concatenate(([0], ends[:-1])).tolist()
        ends = ends.tolist()
        with self._cond:
            if self._gen != gen:
                return b""
            for k in range(self._first - first, len(ends)):
                text = body[starts[k]:ends[k]]
                i = self._first % self.capacity
                if n + len(text) > size:
                    if not out:  # a line longer than the read: split it
                        self._partial = text[size:]
                        self._gen += 1
                        out.append(text[:size])
                        self._bytes -= int(self._size[i])
                        self.read += int(self._size[i] > 0)
                        self._size[i] = 0
                    break
                out.append(text)
                n += len(text)
                self._bytes -= int(self._size[i])
                self.read += int(self._size[i] > 0)  # not the rest of a split line
                self._first += 1
                if self._partial is not None:
                    self._partial = None
                    self._gen += 1
        return b"".join(out)

    def read_idle(self, size: int, block: bool = True,
                  interrupted: Callable[[], bool] = lambda: False,
                  read_before: bool = False) -> bytes:
        """``trace_pipe`` of a CPU no event is recorded on: EAGAIN when
        ``block`` is False, else waits (counted among the
        :data:`MAX_PIPE_WAITERS`) until interrupted (EINTR) or closed (EOF)."""
        with self._cond:
            self._wait(block, interrupted, lambda: False)
        return b""

    def _wait(self, block: bool, interrupted: Callable[[], bool], ready) -> None:
        """``tracing_wait_pipe()`` until ``ready()``; the caller holds ``_cond``."""
        if self._closed:
            return
        if not block:
            raise OSError(errno.EAGAIN, "trace_pipe is empty")
        if ready():  # tracing_wait_pipe()'s EOF test comes before any wait
            return
        if self._waiters >= MAX_PIPE_WAITERS:
            raise OSError(errno.EBUSY, f"{MAX_PIPE_WAITERS} trace_pipe readers already wait")
        self._waiters += 1
        try:
            while not ready() and not self._closed:
                if interrupted():
                    raise OSError(errno.EINTR, "trace_pipe read interrupted")
                self._cond.wait(WAIT_SLICE)
        finally:
            self._waiters -= 1


def _split_first(body: bytes, ends: np.ndarray, partial: bytes | None
                 ) -> tuple[bytes, np.ndarray]:
    """Lines and their ends with the first line replaced by ``partial``, the
    rest of it a trace_pipe read left (None: as they are)."""
    if partial is None or not ends.size:
        return body, ends
    return partial + body[ends[0]:], ends - ends[0] + len(partial)
