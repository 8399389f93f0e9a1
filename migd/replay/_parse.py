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
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..mm import MigrateMode, MigrateReason

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
    return list(MigrateMode)[int(text, 0)]


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
    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.orders: list[dict[int, int] | None] = []
        self.open: dict[tuple, list[list]] = {}  # (pid, reason, mode) -> [[ts, orders]]
        self.last: dict[int, list] = {}  # pid -> its most recently started call
        self.lines = self.malformed = self.other = self.unpaired = 0
        self.shown: list[tuple[str, int, str]] = []

    def bad(self, source: str, lineno: int, line: str) -> None:
        self.malformed += 1
        if len(self.shown) < SHOWN_MALFORMED:
            self.shown.append((source, lineno, line.rstrip("\n")[:120]))

    def feed(self, source: str, text_lines) -> None:
        for lineno, line in enumerate(text_lines, 1):
            self.lines += 1
            m = _LINE.match(line)
            if m is None:
                if not _HEADER.match(line):
                    self.bad(source, lineno, line)
                continue
            event = m["event"]
            if event not in ("mm_migrate_pages_start", "mm_migrate_pages",
                             "remove_migration_pte"):
                self.other += 1
                continue
            try:
                self.event(event, int(m["pid"]), float(m["ts"]), m["payload"])
            except (ValueError, IndexError):
                self.bad(source, lineno, line)

    def event(self, event: str, pid: int, ts: float, payload: str) -> None:
        if event == "mm_migrate_pages_start":
            p = _START.match(payload)
            if p is None:
                raise ValueError(payload)
            entry = [ts, None]
            self.open.setdefault((pid, _reason(p[2]), _mode(p[1])), []).append(entry)
            self.last[pid] = entry
        elif event == "remove_migration_pte":
            p = _PTE.match(payload)
            if p is None:
                raise ValueError(payload)
            cur = self.last.get(pid)
            if cur is not None:
                if cur[1] is None:
                    cur[1] = Counter()
                cur[1][max(0, int(p[1]))] += 1
        else:
            p = _END.match(payload)
            if p is None:
                raise ValueError(payload)
            reason, mode = _reason(p[8]), _mode(p[7])
            starts = self.open.get((pid, reason, mode))
            if not starts:
                self.unpaired += 1  # the trace began inside this call
                return
            cur = starts.pop(0)
            if self.last.get(pid) is cur:
                del self.last[pid]
            nums = [int(x) if x is not None else 0 for x in p.groups()[:6]]
            self.rows.append((cur[0], ts, int(reason), list(MigrateMode).index(mode),
                              *nums, pid))
            self.orders.append(dict(cur[1]) if cur[1] is not None else None)

    def close_file(self) -> None:
        """Starts left open at the end of a file: their ends were not recorded."""
        self.unpaired += sum(len(v) for v in self.open.values())
        self.open.clear()
        self.last.clear()

    def result(self, sources: list[str]) -> TraceCalls:
        self.close_file()
        arr = (np.array(self.rows, dtype=np.float64) if self.rows
               else np.empty((0, len(COLUMNS))))
        cols = {}
        for i, name in enumerate(COLUMNS):
            col = arr[:, i]
            cols[name] = col if name in ("start", "end") else col.astype(np.int64)
        return TraceCalls(cols, self.orders, self.lines, self.malformed, self.shown,
                          self.other, self.unpaired, sources)


def _open_text(path: str):
    with open(path, "rb") as f:
        magic = f.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def parse_text(text: str, source: str = "<text>") -> TraceCalls:
    b = _Builder()
    b.feed(source, io.StringIO(text))
    return b.result([source])


def read_traces(paths: list[str]) -> TraceCalls:
    """Every call of every file, in file order (each file's pids paired on
    their own).  OSError for an unreadable file; a truncated gzip stream
    counts as one malformed line where it stops."""
    b = _Builder()
    for path in paths:
        with _open_text(path) as f:
            try:
                b.feed(path, f)
            except (EOFError, gzip.BadGzipFile, OSError) as e:
                b.bad(path, b.lines + 1, f"<{e}>")
        b.close_file()
    return b.result(list(paths))
