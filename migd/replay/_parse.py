"""ftrace text -> the ``migrate_pages()`` calls it records.

Reads what a real kernel writes: ``trace_pipe`` (no header), ``trace`` (the
``#`` header of ``print_trace_header``) and ``trace-cmd report`` (its
``version =``/``cpus=``/``CPU n is empty`` preamble, comm padded, optional
``(tgid)`` and latency flags, micro- or nanosecond timestamps), plain or gzip.
The line layout is trace_output.c's ``trace_print_context``: ``comm-pid``,
``[cpu]``, the flags, ``secs.usecs:``, then ``event: payload`` (trace-cmd pads the
event name to a column: any spaces before the payload) where payload is
the event's TP_printk text (include/trace/events/migrate.h).

A call is the pair ``mm_migrate_pages_start`` .. ``mm_migrate_pages`` of one
task (pid) with the same mode and reason: calls on different CPUs interleave
in the file.  A kernel task has at most one migrate_pages() open, but a trace
written by migd (one pid, several trio tasks) can hold a promotion and a
compaction open at once, so open starts are kept per (pid, mode, reason),
oldest first.  ``remove_migration_pte`` events of that task in between
(``order=``) give the folio orders of its most recently started call.  An end without its
start (the trace began mid-call) or a start left open are counted, not
guessed at.  A line that is not a trace line, or a migrate line whose payload
does not parse (truncated, edited), counts as malformed with its line number.

Regex per line was chosen over splitting on whitespace: ``comm`` may hold
spaces and dashes (``kworker/u8:2-ev``), which only a pattern anchored on the
``-pid [cpu]`` that follows can cut right.  ~2 us a line: 100,000 calls
(200,000 lines) parse in well under a second.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..mm import MAX_FOLIO_ORDER, MigrateMode, MigrateReason

#: ``comm-pid [(tgid)] [cpu] [flags] secs.frac: [system:]event: payload``.
_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:[^\s:]{1,8}\s+)?(?P<ts>\d+\.\d+):\s+(?:\w+:)?(?P<event>\w+):\s*(?P<payload>.*)$")
#: Lines of the ``trace`` header and the ``trace-cmd report`` preamble.
_HEADER = re.compile(r"^\s*(#|$|version\s*=|cpus=|CPU\s*\d+ is empty|trace-cmd:)")

_MODES = {m.label: m for m in MigrateMode}
_MODES["MIGRATE_SYNC_NO_COPY"] = MigrateMode.MIGRATE_SYNC  # v4.14..v6.9
_SYM = r"(\S+)"
_START = re.compile(rf"^mode={_SYM} reason={_SYM}\s*$")
_END = re.compile(r"^nr_succeeded=(\d+) nr_failed=(\d+) nr_thp_succeeded=(\d+) "
                  r"nr_thp_failed=(\d+) nr_thp_split=(\d+)(?: nr_split=(\d+))? "
                  rf"mode={_SYM} reason={_SYM}\s*$")
_PTE = re.compile(r"^addr=[0-9a-fA-F]+, pte=[0-9a-fA-F]+ order=(-?\d+)\s*$")

#: Malformed lines reported by number (all are counted).
SHOWN_MALFORMED = 5
#: The longest trace line (the kernel's trace_seq holds one page): longer is malformed.
MAX_LINE = 4096
INT64_MAX = (1 << 63) - 1
HPAGE_PMD_ORDER = 9

#: Columns of :class:`TraceCalls`, in order.
COLUMNS = ("start", "end", "reason", "mode", "succeeded", "failed", "thp_succeeded",
           "thp_failed", "thp_split", "split", "pid")


def _reason(text: str) -> MigrateReason:
    """A MIGRATE_REASON symbol, or the number ``__print_symbolic`` prints
    for a value not in its table (``0x9``)."""
    try:
        return MigrateReason.from_label(text)
    except ValueError:
        return MigrateReason(int(text, 0))


def _mode(text: str) -> MigrateMode:
    if text in _MODES:
        return _MODES[text]
    n = int(text, 0)
    if not 0 <= n < len(MigrateMode):
        raise ValueError(f"mode {text}")
    return list(MigrateMode)[n]


@dataclass
class TraceCalls:
    """The calls rebuilt, one numpy column each (index ``i`` is one call), in
    end order; ``orders[i]`` is the call's per-folio order histogram from
    ``remove_migration_pte`` (None: the trace has no per-folio events)."""

    columns: dict[str, np.ndarray]
    orders: list[dict[int, int] | None]
    lines: int = 0
    malformed: int = 0
    malformed_shown: list[tuple[str, int, str]] = field(default_factory=list)
    other_events: int = 0
    unpaired: int = 0
    sources: list[str] = field(default_factory=list)
    #: One note per gzip file that ended early.
    truncated: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.columns["start"].size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def has_folio_orders(self) -> bool:
        return any(o is not None for o in self.orders)

    def reasons(self) -> list[MigrateReason]:
        return [MigrateReason(int(r)) for r in np.unique(self["reason"])]


class _Builder:
    """Calls as they end, one compact column each (``array``: 8 bytes a value,
    against ~300 for a tuple of Python numbers), at most ``max_calls`` calls
    and open starts held."""

    def __init__(self, max_calls: int | None = None) -> None:
        self.cols = {c: array("d" if c in ("start", "end") else "q") for c in COLUMNS}
        self.orders: list[dict[int, int] | None] = []
        self.open: dict[tuple, list[list]] = {}  # (pid, reason, mode) -> [[ts, orders]]
        self.nr_open = 0
        self.last: dict[int, list] = {}  # pid -> its most recently started call
        self.lines = self.malformed = self.other = self.unpaired = 0
        self.shown: list[tuple[str, int, str]] = []
        self.truncated: list[str] = []
        self.max_calls = max_calls

    def bad(self, source: str, lineno: int, line: str) -> None:
        self.malformed += 1
        if len(self.shown) < SHOWN_MALFORMED:
            self.shown.append((source, lineno, line.rstrip("\n")[:120]))

    def feed(self, source: str, text_lines) -> None:
        """``text_lines``: (line, whole) pairs; a line cut at MAX_LINE is not whole."""
        for lineno, (line, whole) in enumerate(text_lines, 1):
            self.lines += 1
            m = _LINE.match(line) if whole else None
            if m is None:
                if not whole or not _HEADER.match(line):
                    self.bad(source, lineno, line)
                continue
            event = m["event"]
            if event not in ("mm_migrate_pages_start", "mm_migrate_pages",
                             "remove_migration_pte"):
                self.other += 1
                continue
            try:
                self.event(event, _count(m["pid"]), _ts(m["ts"]), m["payload"])
            except (ValueError, IndexError):
                self.bad(source, lineno, line)
            if self.max_calls is not None and len(self.orders) + self.nr_open > self.max_calls:
                raise ValueError(f"{source}:{lineno}: more than {self.max_calls} calls (ended "
                                 "or open): over what --max-memory holds")

    def event(self, event: str, pid: int, ts: float, payload: str) -> None:
        if event == "mm_migrate_pages_start":
            p = _START.match(payload)
            if p is None:
                raise ValueError(payload)
            entry = [ts, None]
            self.open.setdefault((pid, _reason(p[2]), _mode(p[1])), []).append(entry)
            self.nr_open += 1
            self.last[pid] = entry
        elif event == "remove_migration_pte":
            p = _PTE.match(payload)
            if p is None:
                raise ValueError(payload)
            order = max(0, int(p[1]))
            if order > MAX_FOLIO_ORDER:
                raise ValueError(f"order {order} above {MAX_FOLIO_ORDER}")
            cur = self.last.get(pid)
            if cur is not None:
                if cur[1] is None:
                    cur[1] = Counter()
                cur[1][order] += 1
        else:
            p = _END.match(payload)
            if p is None:
                raise ValueError(payload)
            reason, mode = _reason(p[8]), _mode(p[7])
            nums = [_count(x) if x is not None else 0 for x in p.groups()[:6]]
            starts = self.open.get((pid, reason, mode))
            if not starts:
                self.unpaired += 1  # the trace began inside this call
                return
            cur = starts.pop(0)
            self.nr_open -= 1
            if self.last.get(pid) is cur:
                del self.last[pid]
            row = (cur[0], ts, int(reason), list(MigrateMode).index(mode), *nums, pid)
            for name, v in zip(COLUMNS, row, strict=True):
                self.cols[name].append(v)
            self.orders.append(dict(cur[1]) if cur[1] is not None else None)

    def close_file(self) -> None:
        """Starts left open at the end of a file: their ends were not recorded."""
        self.unpaired += self.nr_open
        self.nr_open = 0
        self.open.clear()
        self.last.clear()

    def result(self, sources: list[str]) -> TraceCalls:
        self.close_file()
        cols = {name: np.frombuffer(col, dtype=np.float64 if col.typecode == "d" else np.int64)
                for name, col in self.cols.items()}
        return TraceCalls(cols, self.orders, self.lines, self.malformed, self.shown,
                          self.other, self.unpaired, sources, self.truncated)


def _count(text: str) -> int:
    """A count of the trace (``%lu``): one past int64 cannot be a real count of
    pages and would wrap in the int64 columns, so the line is malformed."""
    v = int(text)
    if v > INT64_MAX:
        raise ValueError(f"{text} is past int64")
    return v


def _ts(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"timestamp {text}")
    return v


def _lines(f):
    """(line, whole) per line of ``f``, each line read at most MAX_LINE + 1
    characters at a time: a file without newlines never sits in memory whole."""
    while True:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) <= MAX_LINE or line.endswith("\n"):
            yield line, True
            continue
        rest = line
        while rest and not rest.endswith("\n"):  # skip to the end of the line
            rest = f.readline(MAX_LINE + 1)
        yield line[:MAX_LINE], False


def _open_text(path: str):
    with open(path, "rb") as f:
        magic = f.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def parse_text(text: str, source: str = "<text>") -> TraceCalls:
    b = _Builder()
    b.feed(source, _lines(io.StringIO(text)))
    return b.result([source])


def read_traces(paths: list[str], max_calls: int | None = None) -> TraceCalls:
    """Every call of every file, in file order (each file's pids paired on
    their own), line by line: memory grows with the calls, not the file.

    OSError for an unreadable file.  A gzip stream that ends early (a
    ``trace_pipe | gzip`` stopped mid-write) keeps the calls read before its
    end and notes it; gzip data that does not decompress (bad deflate data, a
    bad CRC or length, a damaged member header) is ValueError naming the file:
    what was read before may be damaged too.  ValueError too past ``max_calls``.
    """
    b = _Builder(max_calls)
    for path in paths:
        before = b.lines
        with _open_text(path) as f:
            try:
                b.feed(path, _lines(f))
            except EOFError:
                b.truncated.append(f"{path}: the gzip stream ends after line "
                                   f"{b.lines - before} (truncated): the calls before it "
                                   "are replayed")
            except (gzip.BadGzipFile, zlib.error) as e:
                raise ValueError(f"{path}: corrupt gzip data after line {b.lines - before}: "
                                 f"{e}") from None
        b.close_file()
    return b.result(list(paths))

