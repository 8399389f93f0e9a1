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

from ..sysfs import Attribute, Directory, Owner, parse_int
from ..tracing import EVENTS
from ._system import System

#: The bound of kstrtoul on a 64-bit kernel.
_ULONG_MAX = 2**64 - 1


def add_tracefs(add, sys: System, base: str = "kernel/tracing") -> None:
    """Add the tracefs files under ``base`` with ``add(path, node)``; ``base``
    is root's and 0700, as tracefs is mounted (TRACEFS_DEFAULT_MODE): reading
    ``trace_pipe`` consumes, so no other user may take root's events."""
    t = sys.tracing
    add(base, Directory(owner=Owner(perm=0o700)))
    add(f"{base}/trace_pipe", Attribute(stream=t.ring.read_pipe))
    add(f"{base}/trace", Attribute(lambda: t.ring.snapshot(t.nr_cpus).rstrip("\n"),
                                   lambda v: None, truncate=t.ring.clear))
    add(f"{base}/tracing_on", Attribute(
        lambda: str(int(t.tracing_on)), lambda on: _set_tracing_on(sys, on),
        parse=lambda v: parse_int(v, 0, _ULONG_MAX, "tracing_on") != 0))
    add(f"{base}/trace_clock", Attribute(lambda: "[boot]", lambda v: None, parse=_parse_clock))
    add(f"{base}/available_events", Attribute(
        lambda: "\n".join(f"{e.system}:{e.name}" for e in EVENTS)))
    add(f"{base}/events/enable", Attribute(
        lambda: t.enable_state(), lambda on: _set_enable(sys, on, None), parse=_parse_enable))
    for system in dict.fromkeys(e.system for e in EVENTS):
        add(f"{base}/events/{system}/enable", Attribute(
            lambda s=system: t.enable_state(s), lambda on, s=system: _set_enable(sys, on, s),
            parse=_parse_enable))
    for e in EVENTS:
        d = f"{base}/events/{e.path}"
        add(f"{d}/enable", Attribute(lambda e=e: str(int(t.enabled[e])),
                                     lambda on, e=e: _set_event(sys, e, on),
                                     parse=_parse_enable))
        add(f"{d}/format", Attribute(lambda e=e: e.format_file()))
        add(f"{d}/id", Attribute(lambda e=e: str(e.id)))


def _parse_enable(text: str) -> bool:
    """``event_enable_write``: kstrtoul, then 0 or 1."""
    return bool(parse_int(text, 0, 1, "enable"))


def _parse_clock(text: str) -> str:
    if text.strip() != "boot":
        raise ValueError("trace_clock: migd has only the boot clock")
    return "boot"


def _set_tracing_on(sys: System, on: bool) -> None:
    old, sys.tracing.tracing_on = sys.tracing.tracing_on, on
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
