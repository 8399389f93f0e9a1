"""The trace events migd emits, each declared once: the kernel's two ``migrate``
events (include/trace/events/migrate.h) and migd's own per-batch event.

A declaration is what ``TRACE_EVENT()`` gives the kernel: system, name, id,
the entry's fields (C type, size, signedness; offsets are laid out here with
natural alignment after the common fields, as the compiler lays out the
kernel's ``struct trace_event_raw_*``) and the ``TP_printk`` format with its
arguments.  From it come the ``format`` file (kernel/trace/trace_events.c,
``f_show``), the ``id`` file, the ``available_events`` line and the text of a
trace line.  Writing the line with a separate Python f-string was rejected: it
is how the old trace line came to match no regex built from the kernel's
``TP_printk``.  Here the line is the print fmt applied by ``%`` formatting, so
the two cannot drift.

Differences from the kernel, deliberate: ids are fixed (the kernel numbers
events at boot); ``MIGRATE_REASON`` includes ``damon`` (v6.3+ kernels, and
migd's own reason list); the ``migrate_offload`` system exists in no kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mm import MigrateMode, MigrateReason


@dataclass(frozen=True)
class Field:
    """One ``__field``/``__string`` of TP_STRUCT__entry."""

    ctype: str  # "unsigned long", "enum migrate_mode", "__data_loc char[]"
    name: str
    size: int
    signed: bool


#: ``struct trace_entry``: the common fields in every event (trace_events.c,
#: ``trace_define_common_fields``).
_COMMON = (Field("unsigned short", "common_type", 2, False),
           Field("unsigned char", "common_flags", 1, False),
           Field("unsigned char", "common_preempt_count", 1, False),
           Field("int", "common_pid", 4, True))
_COMMON_OFFSETS = (0, 2, 3, 4)

#: ``enum migrate_mode`` numbers (include/linux/migrate_mode.h order).
MODE_VALUE = {m: i for i, m in enumerate(MigrateMode)}
#: ``enum migrate_mode`` values as ``MIGRATE_MODE`` maps them.
MODE_SYMBOLS = tuple((i, m.label) for m, i in MODE_VALUE.items())
#: ``enum migrate_reason`` values as ``MIGRATE_REASON`` maps them.
REASON_SYMBOLS = tuple((int(r), r.label) for r in MigrateReason)


@dataclass(frozen=True)
class Arg:
    """One argument of TP_printk: a field, shown as a number, a symbol
    (``__print_symbolic``) or a string (``__get_str``)."""

    field: str
    symbols: tuple[tuple[int, str], ...] | None = None

    def c_text(self, fields: dict[str, Field]) -> str:
        if self.symbols is not None:
            table = ", ".join(f'{{{v}, "{s}"}}' for v, s in self.symbols)
            return f"__print_symbolic(REC->{self.field}, {table})"
        if fields[self.field].ctype.startswith("__data_loc"):
            return f"__get_str({self.field})"
        return f"REC->{self.field}"


@dataclass(frozen=True, eq=False)  # identity: hashed per event recorded
class Event:
    system: str
    name: str
    id: int
    fields: tuple[Field, ...]
    fmt: str  # TP_printk's format string, C conversions
    args: tuple[Arg, ...]
    offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        off, offsets = 8, []  # sizeof(struct trace_entry)
        for f in self.fields:
            align = 4 if f.ctype.startswith("__data_loc") else f.size
            off = (off + align - 1) // align * align
            offsets.append(off)
            off += f.size
        object.__setattr__(self, "offsets", tuple(offsets))
        # sizeof(struct trace_event_raw_<name>): padded to its widest field
        widest = max([4, *(f.size for f in self.fields if not f.ctype.startswith("__data"))])
        object.__setattr__(self, "_sizeof", (off + widest - 1) // widest * widest)
        by_name = {f.name: f for f in self.fields}
        object.__setattr__(self, "_strings", tuple(
            i for i, a in enumerate(self.args) if by_name[a.field].ctype.startswith("__data")))
        # The Python side of the print fmt: %lu/%llu/%u/%d -> %d, %s stays.
        py = self.fmt
        for c in ("%llu", "%lld", "%lu", "%ld", "%u"):
            py = py.replace(c, "%d")
        object.__setattr__(self, "_py_fmt", py)
        object.__setattr__(self, "_symbols", tuple(
            (i, dict(a.symbols)) for i, a in enumerate(self.args) if a.symbols))

    @property
    def py_fmt(self) -> str:
        """TP_printk's format with Python's conversions (%d for the integers)."""
        return self._py_fmt

    @property
    def symbols(self) -> tuple[tuple[int, dict], ...]:
        """``(argument index, {value: symbol})`` of each ``__print_symbolic``."""
        return self._symbols

    @property
    def path(self) -> str:
        return f"{self.system}/{self.name}"

    def payload(self, values: tuple) -> str:
        """The event's text in a trace line: ``values`` are the TP_printk
        arguments in order (symbol arguments as their numeric value)."""
        if len(values) != len(self.args):
            raise ValueError(f"{self.name}: {len(values)} values for {len(self.args)} arguments")
        if not self._symbols:
            return self._py_fmt % values
        out = list(values)
        for i, symbols in self._symbols:
            out[i] = symbols.get(out[i], str(out[i]))
        return self._py_fmt % tuple(out)

    def record_size(self, values: tuple) -> int:
        """Bytes of the entry ``trace_event_buffer_reserve()`` asks for:
        ``sizeof`` the entry struct plus each ``__string``'s text and NUL
        (``trace_event_get_offsets``); ``values`` as for :meth:`payload`."""
        return self._sizeof + sum(len(values[i].encode()) + 1 for i in self._strings)

    def format_file(self) -> str:
        """The ``format`` file as ``f_show`` prints it."""
        lines = [f"name: {self.name}", f"ID: {self.id}", "format:"]
        for fields, offsets in ((_COMMON, _COMMON_OFFSETS), (self.fields, self.offsets)):
            for f, off in zip(fields, offsets, strict=True):
                lines.append(f"\tfield:{f.ctype} {f.name};\toffset:{off};\tsize:{f.size};"
                             f"\tsigned:{int(f.signed)};")
            lines.append("")
        lines.pop()
        by_name = {f.name: f for f in self.fields}
        args = ", ".join(a.c_text(by_name) for a in self.args)
        lines += ["", f'print fmt: "{self.fmt}", {args}']
        return "\n".join(lines) + "\n"


def _ul(name: str) -> Field:
    return Field("unsigned long", name, 8, False)


def _ui(name: str) -> Field:
    return Field("unsigned int", name, 4, False)


_MODE = Field("enum migrate_mode", "mode", 4, False)
_REASON = Field("int", "reason", 4, True)

#: include/trace/events/migrate.h, TRACE_EVENT(mm_migrate_pages): one per
#: migrate_pages() call, counts in base pages (THP counts in THPs).
MM_MIGRATE_PAGES = Event(
    "migrate", "mm_migrate_pages", 496,
    (_ul("succeeded"), _ul("failed"), _ul("thp_succeeded"), _ul("thp_failed"),
     _ul("thp_split"), _ul("large_folio_split"), _MODE, _REASON),
    "nr_succeeded=%lu nr_failed=%lu nr_thp_succeeded=%lu nr_thp_failed=%lu "
    "nr_thp_split=%lu nr_split=%lu mode=%s reason=%s",
    (Arg("succeeded"), Arg("failed"), Arg("thp_succeeded"), Arg("thp_failed"),
     Arg("thp_split"), Arg("large_folio_split"), Arg("mode", MODE_SYMBOLS),
     Arg("reason", REASON_SYMBOLS)))

#: TRACE_EVENT(mm_migrate_pages_start): on entry to migrate_pages().
MM_MIGRATE_PAGES_START = Event(
    "migrate", "mm_migrate_pages_start", 497, (_MODE, _REASON),
    "mode=%s reason=%s", (Arg("mode", MODE_SYMBOLS), Arg("reason", REASON_SYMBOLS)))

#: migd's own: one per migrate_pages_batch(), what the RFC's offload adds.
#: Times in ns (0 when no folio was remapped); ``fallback`` is the errno name
#: of the offload failure whose folios the CPU copied, ``none`` if none.
MIGRATE_OFFLOAD_BATCH = Event(
    "migrate_offload", "migrate_offload_batch", 1500,
    (Field("__data_loc char[]", "migrator", 4, False),
     Field("__data_loc char[]", "fallback", 4, False),
     Field("int", "nid", 4, True), _REASON,
     _ui("nr_folios"), _ui("nr_succeeded"), _ui("nr_failed"), _ui("nr_offloaded"),
     _ui("nr_fallback"), _ul("nr_pages"),
     Field("u64", "first_folio_ns", 8, False), Field("u64", "max_inaccessible_ns", 8, False)),
    "migrator=%s nid=%d reason=%s nr_folios=%u nr_pages=%lu nr_succeeded=%u nr_failed=%u "
    "nr_offloaded=%u nr_fallback=%u fallback=%s first_folio_ns=%llu max_inaccessible_ns=%llu",
    (Arg("migrator"), Arg("nid"), Arg("reason", REASON_SYMBOLS), Arg("nr_folios"),
     Arg("nr_pages"), Arg("nr_succeeded"), Arg("nr_failed"), Arg("nr_offloaded"),
     Arg("nr_fallback"), Arg("fallback"), Arg("first_folio_ns"),
     Arg("max_inaccessible_ns")))

#: migd's own, beside migrate_offload_batch: one per folio a fault got
#: zeroed (``mm_offload_clear_folio()`` of the newest iteration, its CPU
#: fallback, or a prezero pool hit): ``how`` is dma, cpu or pool; ``ns`` the
#: fault's time to a zeroed folio, ``cpu_ns`` the CPU time it took.
MIGRATE_OFFLOAD_CLEAR = Event(
    "migrate_offload", "migrate_offload_clear", 1501,
    (Field("__data_loc char[]", "provider", 4, False),
     Field("__data_loc char[]", "how", 4, False),
     Field("int", "nid", 4, True), _ui("order"), _ul("nr_pages"),
     Field("u64", "ns", 8, False), Field("u64", "cpu_ns", 8, False)),
    "provider=%s nid=%d order=%u nr_pages=%lu how=%s ns=%llu cpu_ns=%llu",
    (Arg("provider"), Arg("nid"), Arg("order"), Arg("nr_pages"), Arg("how"), Arg("ns"),
     Arg("cpu_ns")))

#: Every event, in ``available_events`` order.
EVENTS = (MM_MIGRATE_PAGES_START, MM_MIGRATE_PAGES, MIGRATE_OFFLOAD_BATCH,
          MIGRATE_OFFLOAD_CLEAR)


#: ``EVENT_BUF_SIZE``: the longest ``set_event`` word (``trace_get_user`` fails past it).
EVENT_BUF_SIZE = 127


def parse_set_event(text: str) -> list[tuple[bool, tuple[Event, ...]]]:
    """A ``set_event`` write as ``ftrace_event_write()`` reads it: words
    separated by white space, each ``[!]<system>:<event>`` (``!`` disables);
    ``*`` or nothing on a side of the colon is any; a word without a colon is
    a system or an event name (``ftrace_set_clr_event()``).  A word that
    matches no event is EINVAL (ValueError).  Returns (enable, events) per word."""
    out = []
    for word in text.split():
        on = not word.startswith("!")
        spec = word if on else word[1:]
        if len(spec) > EVENT_BUF_SIZE:
            raise ValueError(f"set_event: {spec[:20]}...: longer than {EVENT_BUF_SIZE}")
        if ":" in spec:
            sub, _, name = spec.partition(":")
            events = tuple(e for e in EVENTS if sub in ("", "*", e.system)
                           and name in ("", "*", e.name))
        else:
            events = tuple(e for e in EVENTS if spec in (e.system, e.name))
        if not events:
            raise ValueError(f"set_event: {spec!r} matches no event (system:event)")
        out.append((on, events))
    return out
