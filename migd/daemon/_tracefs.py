"""``kernel/tracing``: the :class:`~migd.tracing.Tracing` model as tracefs files.

Layout and write rules of kernel/trace/trace.c and trace_events.c:
``tracing_on`` takes any unsigned number (non-zero is on, ``rb_simple_write``);
an ``enable`` file takes 0 or 1 (``event_enable_write``,
``system_enable_write``) and reads 0, 1 or X (mixed); ``trace`` reads the
ring with its header and is cleared by ``> trace`` (O_TRUNC); what is written
to it is ignored (``tracing_write_stub``); ``trace_pipe`` is a consuming read
that blocks, or fails with EAGAIN when opened O_NONBLOCK.  ``trace_clock``
lists the one clock migd has, ``[boot]``: accepting the names of clocks it
does not have was rejected.
"""

from __future__ import annotations

from ..sysfs import Attribute
from ..tracing import EVENTS
from ._parsers import parse_int
from ._system import System

#: The bound of kstrtoul on a 64-bit kernel.
_ULONG_MAX = 2**64 - 1


def add_tracefs(add, sys: System, base: str = "kernel/tracing") -> None:
    """Add the tracefs files under ``base`` with ``add(path, Attribute)``."""
    t = sys.tracing
    add(f"{base}/trace_pipe", Attribute(stream=t.ring.read_pipe))
    add(f"{base}/trace", Attribute(lambda: t.ring.snapshot(t.nr_cpus).rstrip("\n"),
                                   lambda v: None, truncate=t.ring.clear))
    add(f"{base}/tracing_on", Attribute(lambda: str(int(t.tracing_on)),
                                        lambda v: _set_tracing_on(sys, v)))
    add(f"{base}/trace_clock", Attribute(lambda: "[boot]", _set_clock))
    add(f"{base}/available_events", Attribute(
        lambda: "\n".join(f"{e.system}:{e.name}" for e in EVENTS)))
    add(f"{base}/events/enable", Attribute(
        lambda: t.enable_state(), lambda v: _set_enable(sys, v, None)))
    for system in dict.fromkeys(e.system for e in EVENTS):
        add(f"{base}/events/{system}/enable", Attribute(
            lambda s=system: t.enable_state(s), lambda v, s=system: _set_enable(sys, v, s)))
    for e in EVENTS:
        d = f"{base}/events/{e.path}"
        add(f"{d}/enable", Attribute(lambda e=e: str(int(t.enabled[e])),
                                     lambda v, e=e: _set_event(sys, e, v)))
        add(f"{d}/format", Attribute(lambda e=e: e.format_file()))
        add(f"{d}/id", Attribute(lambda e=e: str(e.id)))


def _set_tracing_on(sys: System, text: str) -> None:
    on = parse_int(text, 0, _ULONG_MAX, "tracing_on") != 0
    old, sys.tracing.tracing_on = sys.tracing.tracing_on, on
    sys.emit("knob_changed", knob="tracing_on", old=int(old), new=int(on))


def _set_clock(text: str) -> None:
    if text.strip() != "boot":
        raise ValueError("trace_clock: migd has only the boot clock")


def _set_enable(sys: System, text: str, system: str | None) -> None:
    on = bool(parse_int(text, 0, 1, "enable"))
    old = sys.tracing.enable_state(system)
    sys.tracing.set_enabled(on, system)
    sys.emit("knob_changed", knob=f"tracing.events.{system or 'all'}.enable", old=old,
             new=int(on))


def _set_event(sys: System, event, text: str) -> None:
    on = bool(parse_int(text, 0, 1, "enable"))
    old = int(sys.tracing.enabled[event])
    sys.tracing.enabled[event] = on
    sys.emit("knob_changed", knob=f"tracing.events.{event.system}.{event.name}.enable",
             old=old, new=int(on))
