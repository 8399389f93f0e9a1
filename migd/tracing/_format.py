"""Trace lines written by compiled code, without the GIL, from the ring's arrays.

The ring keeps each entry as numbers (its event, time and TP_printk arguments:
strings as ids in a table, ``__print_symbolic`` arguments as their values),
as kernel/trace/ring_buffer.c keeps binary records; a reader formats them.
Each event's whole line (``trace_print_context`` and the event's print fmt,
see :func:`format_line`) is parsed once into a *program*: literal bytes and
conversions (``%[-][0][width]d``, ``%s`` of a string or a symbol), which
:func:`_format_entries` runs for a run of entries.  A full ring (4096 lines,
~750 KB) is formatted in ~1 ms without the GIL; one ``%`` format per line in
Python took ~6 ms with it, in every reader's ``open`` of ``trace``.  The
Python :func:`format_line` stays the specification: a test holds the two to
the same bytes.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from ._events import EVENTS, Event

#: TP_printk arguments of the widest event: columns of the ring's value array.
MAX_ARGS = max(len(e.args) for e in EVENTS)
#: Distinct strings the table holds (migrator, errno, provider names: a
#: handful, none from a user); past it a string shows as ``?``.
MAX_STRINGS = 1024

_LIT, _INT, _STR, _SYM = range(4)
_CONV = re.compile(rb"%(-?)(0?)(\d*)([ds])")


class LineFormat:
    """The programs of ``events`` and the string table their entries use.

    ``encode`` (the writer's thread) turns an entry's TP_printk values into
    the ring's numbers; ``format`` (any thread) writes lines.  The string
    table is published whole (bytes, offsets, longest) by the one writer at
    each new string, and a reader takes it once: a reader never sees an id
    whose bytes its table lacks."""

    def __init__(self, context: str, events: tuple[Event, ...] = EVENTS) -> None:
        self.events = events
        self.code = {e: k for k, e in enumerate(events)}
        self._strings: dict[str, int] = {}
        self._raw: list[bytes] = []
        self.tables = (np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64), 0)
        self.intern("?")
        ops, lits, syms, lo, hi, bound, nstr = [], bytearray(), [], [], [], [], []
        for e in events:
            kinds = self._arg_kinds(e)
            text = (context + f"{e.name}: {e.py_fmt}\n").encode()
            if b"%%" in text:
                raise ValueError(f"{e.name}: %% in a print fmt")
            lo.append(len(ops))
            worst, strings, at, arg = 0, 0, 0, 0
            for m in _CONV.finditer(text):
                if m.start() > at:
                    ops.append((_LIT, len(lits), m.start() - at, 0, 0))
                    lits += text[at:m.start()]
                    worst += m.start() - at
                left, zero, width, conv = m.group(1) == b"-", m.group(2) == b"0", \
                    int(m.group(3) or 0), m.group(4)
                kind = kinds[arg]
                if conv == b"d":
                    ops.append((_INT, arg, width, int(left), int(zero)))
                    worst += max(width, 21)
                elif isinstance(kind, dict):
                    ops.append((_SYM, arg, len(syms), len(kind), 0))
                    syms += [(v, self.intern(s)) for v, s in kind.items()]
                    worst += max(21, *(len(s.encode()) for s in kind.values()))
                else:
                    ops.append((_STR, arg, 0, 0, 0))
                    strings += 1
                at, arg = m.end(), arg + 1
            if at < len(text):
                ops.append((_LIT, len(lits), len(text) - at, 0, 0))
                lits += text[at:]
                worst += len(text) - at
            hi.append(len(ops))
            bound.append(worst)
            nstr.append(strings)
        self._ops = np.array(ops, dtype=np.int64).reshape(-1, 5)
        self._lits = np.frombuffer(bytes(lits), dtype=np.uint8)
        self._syms = np.array(syms, dtype=np.int64).reshape(-1, 2)
        self._lo, self._hi = np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64)
        self._bound = np.array(bound, dtype=np.int64)  # less the %s of strings
        self._nstr = np.array(nstr, dtype=np.int64)

    @staticmethod
    def _arg_kinds(e: Event) -> list:
        """Per conversion of the line: the context's three numbers (pid,
        seconds, microseconds), then each argument: "int", "str" or its
        symbols."""
        symbols = dict(e.symbols)
        fields = {f.name: f for f in e.fields}
        return ["int"] * 3 + [symbols[i] if i in symbols else
                              "str" if fields[a.field].ctype.startswith("__data_loc") else "int"
                              for i, a in enumerate(e.args)]

    def intern(self, text: str) -> int:
        """The id of ``text`` in the string table (``?``'s past MAX_STRINGS);
        the writer's thread only."""
        sid = self._strings.get(text)
        if sid is None:
            if len(self._strings) >= MAX_STRINGS:
                return 0
            sid = self._strings[text] = len(self._strings)
            self._raw.append(text.encode())
            self.tables = (np.frombuffer(b"".join(self._raw), dtype=np.uint8),
                           np.cumsum([0] + [len(r) for r in self._raw], dtype=np.int64),
                           max(len(r) for r in self._raw))  # one store: published whole
        return sid

    def encode(self, event: Event, values: tuple) -> list[int]:
        """An entry's values as the ring's numbers: strings interned."""
        out = list(values)
        for i in event._strings:
            out[i] = self.intern(out[i])
        return out

    def format(self, ev: np.ndarray, secs: np.ndarray, vals: np.ndarray,
               pid: int) -> tuple[bytes, np.ndarray]:
        """The lines of entries (rows of ``ev``, ``secs``, ``vals``) and
        where each ends."""
        sbuf, soff, longest = self.tables  # once: the writer may publish another
        out = np.empty(int((self._bound[ev] + self._nstr[ev] * longest).sum()), dtype=np.uint8)
        ends = np.empty(ev.size, dtype=np.int64)
        n = _format_entries(ev, secs, vals, pid, self._ops, self._lo, self._hi, self._lits,
                            self._syms, sbuf, soff, out, ends)
        return out[:n].tobytes(), ends


@njit(nogil=True, cache=True)
def _write_int(out, pos, v, width, left, zero):
    """``%[-][0][width]d`` of ``v`` at ``out[pos]``; returns the next position."""
    neg = v < 0
    u = -v if neg else v
    digits, t = 1, u
    while t >= 10:
        t //= 10
        digits += 1
    pad = max(width - digits - neg, 0)
    if not left and not zero:
        for _ in range(pad):
            out[pos] = 32
            pos += 1
    if neg:
        out[pos] = 45
        pos += 1
    if zero and not left:
        for _ in range(pad):
            out[pos] = 48
            pos += 1
    for k in range(digits - 1, -1, -1):
        out[pos + k] = 48 + u % 10
        u //= 10
    pos += digits
    if left:
        for _ in range(pad):
            out[pos] = 32
            pos += 1
    return pos


@njit(nogil=True, cache=True)
def _write_str(out, pos, sbuf, soff, sid):
    for k in range(soff[sid], soff[sid + 1]):
        out[pos] = sbuf[k]
        pos += 1
    return pos


@njit(nogil=True, cache=True)
def _format_entries(ev, secs, vals, pid, ops, lo, hi, lits, syms, sbuf, soff, out, ends):
    """Each entry's line by its event's program; ``ends[k]`` where line k ends."""
    pos = np.int64(0)  # literals would compile the helpers once more per literal
    for k in range(ev.size):
        e = ev[k]
        us = (np.int64(np.rint(secs[k] * 1e9)) + 500) // 1000  # ns2usecs()
        for o in range(lo[e], hi[e]):
            kind, a = ops[o, 0], ops[o, 1]
            if kind == 0:
                for j in range(a, a + ops[o, 2]):
                    out[pos] = lits[j]
                    pos += 1
                continue
            v = pid if a == 0 else us // 1_000_000 if a == 1 else us % 1_000_000 if a == 2 \
                else vals[k, a - 3]
            if kind == 1:
                pos = _write_int(out, pos, v, ops[o, 2], ops[o, 3], ops[o, 4])
            elif kind == 2:
                pos = _write_str(out, pos, sbuf, soff, v)
            else:
                sid = np.int64(-1)
                for j in range(ops[o, 2], ops[o, 2] + ops[o, 3]):
                    if syms[j, 0] == v:
                        sid = syms[j, 1]
                if sid >= 0:
                    pos = _write_str(out, pos, sbuf, soff, sid)
                else:
                    pos = _write_int(out, pos, v, np.int64(0), np.int64(0), np.int64(0))
        ends[k] = pos
    return pos
