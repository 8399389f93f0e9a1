"""The trace ring buffer: ``trace`` (a snapshot), ``trace_pipe`` (a consuming read),
``per_cpu/cpuN/stats`` and the ``events/header_*`` files that describe its pages.

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

Every event is recorded on CPU 0 (the engine is one thread): the other CPUs'
``per_cpu`` files read an empty buffer, whose ``trace_pipe``
(:meth:`TraceRing.read_idle`) waits as an empty CPU's does.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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


#: Each event's whole line as one ``%`` format (see :func:`format_line`).
_LINE_FORMATS: dict[Event, str] = {}


def format_line(event: Event, seconds: float, values: tuple, pid: int) -> str:
    """One line as trace_output.c writes it: ``trace_print_context``
    (``"%16s-%-7d "``, ``"[%03d] "``, the five lat flags, ``" %5lu.%06lu: "``)
    then ``"<event>: "`` and the event's TP_printk text.  One ``%`` format per
    event, context and payload together: 1.5 us a line against 1.9 for the
    context's f-string and :meth:`Event.payload` (a full ring is 4096 lines,
    formatted with the GIL held when ``trace`` is opened).  Baking each
    mode's and reason's symbol into its own format gave 1.25 us for a
    tokenizer of TP_printk formats: rejected, too much code for 0.25 us."""
    fmt = _LINE_FORMATS.get(event)
    if fmt is None:
        fmt = _LINE_FORMATS[event] = (
            f"{COMM:>16}-%-7d [000] ..... %5d.%06d: {event.name}: {event.py_fmt}\n")
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
        self._bytes = 0  # rb_event_length of the entries in the ring
        # [event, seconds, values, bytes, line]: line is the formatted text
        # (bytes), None until a reader formats it; a trace_pipe read that split
        # a line leaves [None, seconds, None, 0, the rest].
        self._entries: deque[list] = deque()
        self._first = 0  # the serial number of _entries[0]: +1 at each entry dropped
        self._gen = 0  # +1 when an entry's text changes (a split line) or the ring is cleared
        self._text: _Text | None = None  # the text of the entries at the last open
        self._cond = threading.Condition()
        self._closed = False
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- writer (engine thread) ----------------------------------------------------

    def append(self, event: Event, seconds: float, values: tuple) -> None:
        size = rb_event_length(event.record_size(values))
        with self._cond:
            if len(self._entries) >= self.capacity:
                self._bytes -= self._entries.popleft()[3]
                self._first += 1
                self.overrun += 1
            self._entries.append([event, seconds, values, size, None])
            self._bytes += size
            self.cmdline_saved = True
            if self._waiters:  # Condition.notify_all costs ~1 us even with none
                self._cond.notify_all()

    def clear(self) -> None:
        """``tracing_reset_online_cpus``: what ``> trace`` (O_TRUNC) does."""
        with self._cond:
            self._entries.clear()
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

    def line(self, entry: list) -> bytes:
        """An entry's line, formatted at its first read and kept (readers
        racing on it format the same bytes)."""
        text = entry[4]
        if text is None:
            text = entry[4] = format_line(entry[0], entry[1], entry[2], self.pid).encode()
        return text

    def view(self, nr_cpus: int, lines: bool = True) -> TraceView:
        """The ``trace`` file as an open file reads it: ``print_trace_header``
        for the nop tracer and the entries in the ring at open, which stay
        there.  ``lines`` False: an empty CPU's ``per_cpu/cpuN/trace`` (the
        header counts every CPU's entries)."""
        with self._cond:
            entries, first, gen = list(self._entries), self._first, self._gen
            overrun, text = self.overrun, self._text
        n = len(entries)
        head = (f"# tracer: nop\n#\n# entries-in-buffer/entries-written: {n}/{n + overrun}"
                f"   #P:{nr_cpus}\n{_HELP}").encode()
        if not lines:
            return TraceView(head, b"")
        text = self._render(entries, first, text if text and text.gen == gen else None)
        with self._cond:
            if self._gen == gen and (self._text is None or self._text.first <= first):
                self._text = text
        return TraceView(head, text.body)

    def _render(self, entries: list[list], first: int, last: _Text | None) -> _Text:
        """The text of ``entries`` (``first`` the serial of the first): the
        last open's text less the entries dropped since, plus the lines of
        those recorded since, formatted now."""
        drop = first - last.first if last else -1
        if last is None or not 0 <= drop <= len(last.lengths) or \
                len(last.lengths) - drop > len(entries):
            new = [self.line(e) for e in entries]
            return _Text(self._gen, first, [len(t) for t in new], b"".join(new))
        new = [self.line(e) for e in entries[len(last.lengths) - drop:]]
        if not drop and not new:
            return last
        kept = memoryview(last.body)[sum(last.lengths[:drop]):]
        return _Text(last.gen, first, last.lengths[drop:] + [len(t) for t in new],
                     b"".join([kept, *new]))  # one copy

    def snapshot(self, nr_cpus: int, lines: bool = True) -> str:
        """The whole ``trace`` file now (see :meth:`view`)."""
        view = self.view(nr_cpus, lines)
        return (view.head + view.body).decode()

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
                oldest = self._entries[0][1] if self._entries else 0.0
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
                if not self._entries:
                    self._wait(block, interrupted, lambda: self._entries or stop())
                    if not self._entries and (self._closed or stop()):
                        return b""
                # a line is longer than 32 bytes: these are all this read can take
                first = list(itertools.islice(self._entries, size // 32 + 1))
            texts = [self.line(e) for e in first]  # formatted without the lock: append waits not
            out, n = [], 0
            with self._cond:
                for entry, text in zip(first, texts, strict=True):
                    if not self._entries or self._entries[0] is not entry:
                        break  # another reader took it, or a clear or overrun dropped it
                    if n + len(text) > size:
                        if not out:  # a line longer than the read: split it
                            self._entries[0] = [None, entry[1], None, 0, text[size:]]
                            self._gen += 1
                            out.append(text[:size])
                            self._bytes -= entry[3]
                            self.read += entry[3] > 0
                        break
                    self._entries.popleft()
                    self._first += 1
                    out.append(text)
                    n += len(text)
                    self._bytes -= entry[3]
                    self.read += entry[3] > 0  # not the rest of a split line
            if out:  # else another reader took it all: wait again, never a false EOF
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


@dataclass(frozen=True)
class _Text:
    """The lines of the entries from serial ``first`` on, joined, and their lengths."""

    gen: int
    first: int
    lengths: list[int]
    body: bytes


class TraceView:
    """One open ``trace`` file: what :meth:`TraceRing.view` found at open,
    read at any offset as ``seq_read()`` reads it (at most the bytes asked
    for).  ``tracing_open()`` stops the kernel's recording while the file is
    open (``pause-on-trace``); migd keeps recording and the open file reads
    what the ring held at open.  Each entry is formatted once and the ring
    keeps the text of the last open, so an open formats only the entries
    recorded since and a read copies what it returns.  Rejected: rendering
    the whole ring (1 MB) at each first read, with the GIL (5 ms, 30 ms after
    a full ring of new entries: the slowest reads of the tree), and a
    ``seq_file`` walk per read (a Python step per line: 1 ms a ``cat``)."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body

    def __bytes__(self) -> bytes:
        """The whole file as of its open (what the tree's compiled reads serve)."""
        return self.head + self.body

    def read(self, size: int, offset: int) -> bytes:
        head = self.head
        if offset >= len(head):
            return self.body[offset - len(head):offset - len(head) + size]
        out = head[offset:offset + size]
        return out + self.body[:size - len(out)] if len(out) < size else out
