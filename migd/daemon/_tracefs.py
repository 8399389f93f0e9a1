"""``kernel/tracing``: the :class:`~migd.tracing.Tracing` model as tracefs files.

Layout and write rules of kernel/trace/trace.c and trace_events.c:
``trace`` is read, as a seq_file, from the entries at its open (``TraceRing.view``);
``tracing_on`` takes any unsigned number (non-zero is on, ``rb_simple_write``);
an ``enable`` file takes 0 or 1 (``event_enable_write``,
``system_enable_write``) and reads 0, 1 or X (mixed); ``trace`` reads the
ring with its header and is cleared by ``> trace`` (O_TRUNC); what is written
to it is ignored (``tracing_write_stub``); ``trace_pipe`` is a consuming read
that blocks, or fails with EAGAIN when opened O_NONBLOCK.  ``trace_clock``
lists the one clock migd has, ``[boot]``: accepting the names of clocks it
does not have was rejected.  ``current_tracer`` is ``nop``, the one tracer
(``available_tracers``): migd has events, no function tracer.  ``set_event``
lists the enabled events and takes ``[!]system:event`` words
(``ftrace_event_write``); opening it with O_TRUNC disables every event first
(``ftrace_event_set_open`` calls ``ftrace_clear_events``).  ``events/header_page``
and ``events/header_event`` describe the ring's pages (``show_header_page_file``
and ``show_header_event_file`` print ``ring_buffer_print_page_header`` and
``ring_buffer_print_entry_header``): libtracefs will not load a tree without
them.  ``per_cpu/cpuN/`` has ``trace``, ``trace_pipe`` and ``stats`` for each
CPU; every event is on CPU 0.  Declared as :class:`Knob` s, so the generated
reference lists them with the other files.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sysfs import Anything, Choice, Int
from ..tracing import EVENTS, entry_header, page_header, parse_set_event
from ._knobs import Knob
from ._system import System

TRACEFS = "kernel/tracing"
#: The bound of kstrtoul on a 64-bit kernel.
_ULONG_MAX = 2**64 - 1
_ENABLE = Int(0, 1)  # event_enable_write, system_enable_write: kstrtoul, then 0 or 1


def _systems(sys) -> list[tuple[str, str]]:
    return [(s, s) for s in dict.fromkeys(e.system for e in EVENTS)]


def _events(sys) -> list[tuple[str, object]]:
    return [(e.path, e) for e in EVENTS]


def _cpus(sys) -> list[tuple[str, int]]:
    return [(str(c), c) for c in range(sys.tracing.nr_cpus)]


@dataclass(frozen=True)
class _SetEvent:
    """A ``set_event`` write: its (enable, events) words, see ``parse_set_event``."""

    kind = "set_event"

    def __call__(self, text: str, what: str, sys=None, inst=None):
        return parse_set_event(text)

    def describe(self) -> str:
        return "[!]system:event words (* or empty: any)"


def tracefs_knobs() -> list[Knob]:
    """The tracefs files, declared like the tunables (the tree's directory
    ``TRACEFS`` itself is root's and 0700, made by ``build_tree``)."""
    t, ev, cpu = TRACEFS, f"{TRACEFS}/events/{{}}", f"{TRACEFS}/per_cpu/cpu{{}}"
    return [
        Knob(f"{t}/trace_pipe", "consuming read of the ring: blocks, or EAGAIN when opened "
             "O_NONBLOCK", stream=lambda s, i: s.tracing.read_pipe, family="tracing"),
        Knob(f"{t}/trace", "the ring with its header; `> trace` (O_TRUNC) clears it",
             show=lambda s, i: s.tracing.ring.snapshot(s.tracing.nr_cpus).rstrip("\n"),
             view=lambda s, i: s.tracing.ring.view(s.tracing.nr_cpus),
             set=lambda s, i, v: None, parse=Anything("any (ignored)"),
             truncate=lambda s, i: s.tracing.ring.clear(), family="tracing"),
        Knob(f"{t}/tracing_on", "0: stop recording into the ring (rb_simple_write)",
             show=lambda s, i: str(int(s.tracing.tracing_on)),
             set=lambda s, i, v: _set_tracing_on(s, v != 0),
             parse=Int(0, _ULONG_MAX, "an unsigned number; non-zero is on"), family="tracing"),
        Knob(f"{t}/trace_clock", "the clocks, the one in use in brackets: migd has only boot",
             show=lambda s, i: "[boot]", set=lambda s, i, v: None,
             parse=Choice(lambda: ("boot",)), family="tracing"),
        Knob(f"{t}/available_events", "every event, as system:name",
             show=lambda s, i: "\n".join(f"{e.system}:{e.name}" for e in EVENTS),
             family="tracing"),
        Knob(f"{t}/set_event", "the enabled events, as system:name; write [!]system:event "
             "words to enable (disable); `>` (O_TRUNC) disables every event first",
             show=lambda s, i: s.tracing.set_event_text().rstrip("\n"),
             set=lambda s, i, v: _set_events(s, v),
             parse=_SetEvent(), truncate=lambda s, i: s.tracing.set_enabled(False),
             family="tracing"),
        Knob(f"{t}/available_tracers", "the tracers: nop, the only one migd has",
             show=lambda s, i: "nop", family="tracing"),
        Knob(f"{t}/current_tracer", "the tracer in use: nop (the only one)",
             show=lambda s, i: "nop", set=lambda s, i, v: None,
             parse=Choice(lambda: ("nop",)), family="tracing"),
        Knob(f"{t}/saved_cmdlines", "pid and comm of the tasks seen in events "
             "(saved_cmdlines_show: the daemon's, once it recorded one)",
             show=lambda s, i: f"{s.tracing.ring.pid} migd" if s.tracing.ring.cmdline_saved
             else "", family="tracing"),
        Knob(f"{t}/events/header_page", "the ring page's header "
             "(ring_buffer_print_page_header)", show=lambda s, i: page_header(),
             family="tracing"),
        Knob(f"{t}/events/header_event", "the ring entry's header "
             "(ring_buffer_print_entry_header)", show=lambda s, i: entry_header(),
             family="tracing"),
        Knob(f"{cpu}/trace", "the CPU's part of trace: every event on cpu0, the others "
             "empty; `>` clears the CPU's entries",
             show=lambda s, c: s.tracing.ring.snapshot(s.tracing.nr_cpus, c == 0).rstrip("\n"),
             view=lambda s, c: s.tracing.ring.view(s.tracing.nr_cpus, c == 0),
             set=lambda s, c, v: None, parse=Anything("any (ignored)"),
             truncate=lambda s, c: s.tracing.ring.clear() if c == 0 else None,
             each=_cpus, slot="<N>", family="tracing"),
        Knob(f"{cpu}/trace_pipe", "the CPU's trace_pipe: cpu0's is trace_pipe, the others "
             "wait (EAGAIN when O_NONBLOCK)",
             stream=lambda s, c: s.tracing.read_pipe if c == 0 else s.tracing.ring.read_idle,
             each=_cpus, slot="<N>", family="tracing"),
        Knob(f"{cpu}/stats", "the CPU's ring counters (tracing_stats_read)",
             show=lambda s, c: s.tracing.ring.stats(s.tracing.now(), c), each=_cpus,
             slot="<N>", family="tracing"),
        Knob(f"{t}/events/enable", "every event: 0, 1, or X (mixed)",
             show=lambda s, i: s.tracing.enable_state(),
             set=lambda s, i, v: _set_enable(s, bool(v), None), parse=_ENABLE,
             family="tracing"),
        Knob(f"{ev}/enable", "the system's events: 0, 1, or X (mixed)",
             show=lambda s, system: s.tracing.enable_state(system),
             set=lambda s, system, v: _set_enable(s, bool(v), system), parse=_ENABLE,
             each=_systems, slot="<system>", family="tracing"),
        Knob(f"{ev}/enable", "the event: 0 or 1",
             show=lambda s, e: str(int(s.tracing.enabled[e])),
             set=lambda s, e, v: _set_event(s, e, bool(v)), parse=_ENABLE,
             each=_events, slot="<system>/<event>", family="tracing"),
        Knob(f"{ev}/format", "the event's fields, as the kernel prints them",
             show=lambda s, e: e.format_file(), each=_events, slot="<system>/<event>",
             family="tracing"),
        Knob(f"{ev}/id", "the event's id", show=lambda s, e: str(e.id), each=_events,
             slot="<system>/<event>", family="tracing"),
    ]


def _set_tracing_on(sys: System, on: bool) -> None:
    old = sys.tracing.tracing_on
    sys.tracing.set_tracing_on(on)
    sys.emit("knob_changed", knob="tracing_on", old=int(old), new=int(on))


def _set_enable(sys: System, on: bool, system: str | None) -> None:
    old = sys.tracing.enable_state(system)
    sys.tracing.set_enabled(on, system)
    sys.emit("knob_changed", knob=f"tracing.events.{system or 'all'}.enable", old=old,
             new=int(on))


def _set_event(sys: System, event, on: bool) -> None:
    old = int(sys.tracing.enabled[event])
    sys.tracing.enabled[event] = on
    sys.emit("knob_changed", knob=f"tracing.events.{event.system}.{event.name}.enable",
             old=old, new=int(on))


def _set_events(sys: System, words) -> None:
    old = sys.tracing.set_event_text().split()
    for on, events in words:
        for e in events:
            sys.tracing.enabled[e] = on
    sys.emit("knob_changed", knob="tracing.set_event", old=" ".join(old),
             new=" ".join(sys.tracing.set_event_text().split()))
