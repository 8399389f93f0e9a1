"""tracefs for migd: the kernel's ``migrate`` events and migd's own, a ring
buffer read as ``trace`` and ``trace_pipe`` (kernel/trace/ in the kernel).

Pure: no FUSE; the daemon binds it into its tree (``daemon/_tracefs.py``).
"""

from ._events import (
    EVENTS,
    MIGRATE_OFFLOAD_BATCH,
    MIGRATE_OFFLOAD_CLEAR,
    MM_MIGRATE_PAGES,
    MM_MIGRATE_PAGES_START,
    MODE_VALUE,
    Event,
    Field,
    parse_set_event,
)
from ._ring import RING_ENTRIES, TraceRing, entry_header, format_line, page_header
from ._tracer import Tracing

__all__ = ["EVENTS", "MIGRATE_OFFLOAD_BATCH", "MIGRATE_OFFLOAD_CLEAR", "MM_MIGRATE_PAGES",
           "MM_MIGRATE_PAGES_START", "MODE_VALUE", "RING_ENTRIES", "Event", "Field",
           "TraceRing", "Tracing", "entry_header", "format_line", "page_header",
           "parse_set_event"]
