"""What kernel/tracing holds for migd's events: enable flags, ``tracing_on``
and the ring, fed by the engine's two observers.

Timestamps are seconds on the emulated machine's boot clock: the engine's
trio clock minus its value when the machine booted (daemon start), as the
kernel's ``boot`` trace clock counts from boot.  Every event starts enabled,
unlike the kernel's (all off at boot): a fresh daemon's ``trace_pipe`` shows
migrations at once, which is what people open it for; an event costs ~1 us on
the engine's thread while enabled and a test of two flags while not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from ..migrate import BatchRecords, MigrateCall
from ..mm import MigrateReason
from ._events import (
    EVENTS,
    MIGRATE_OFFLOAD_BATCH,
    MIGRATE_OFFLOAD_CLEAR,
    MM_MIGRATE_PAGES,
    MM_MIGRATE_PAGES_START,
    MODE_VALUE,
    Event,
)
from ._ring import RING_ENTRIES, TraceRing


class Tracing:
    """The tracing instance: ``boot`` is the trio time the boot clock counts
    from (the daemon sets it when it starts); :meth:`attach` subscribes it to
    an engine."""

    def __init__(self, boot: float = 0.0, entries: int = RING_ENTRIES, pid: int | None = None,
                 nr_cpus: int | None = None) -> None:
        self.boot = boot
        self.ring = TraceRing(entries, pid)
        self.nr_cpus = nr_cpus or os.cpu_count() or 1
        #: ``tracing_on``: 0 stops recording, the enable flags stay as they are.
        self.tracing_on = True
        self.enabled: dict[Event, bool] = dict.fromkeys(EVENTS, True)

    @property
    def boot(self) -> float:
        return self._boot

    @boot.setter
    def boot(self, value: float) -> None:
        """Also notes the wall clock then, for :meth:`now` on threads that
        cannot ask trio (trio's clock counts as ``perf_counter`` does)."""
        self._boot, self._perf_at_boot = value, time.perf_counter()

    def now(self) -> float:
        """The boot clock now (``per_cpu/cpuN/stats``' ``now ts``), from any thread."""
        return time.perf_counter() - self._perf_at_boot

    def attach(self, engine) -> None:
        engine.subscribe_calls(self.on_call)
        engine.subscribe(self.on_batches)

    # -- enable files ------------------------------------------------------------

    def events(self, system: str | None = None) -> list[Event]:
        return [e for e in EVENTS if system is None or e.system == system]

    def enable_state(self, system: str | None = None) -> str:
        """An ``enable`` file above events: 0, 1, or X when they differ."""
        states = {self.enabled[e] for e in self.events(system)}
        return "X" if len(states) > 1 else str(int(states.pop()))

    def set_enabled(self, on: bool, system: str | None = None) -> None:
        for e in self.events(system):
            self.enabled[e] = on

    def set_event_text(self) -> str:
        """``set_event`` read: ``t_show()``, ``system:event`` per enabled event."""
        return "".join(f"{e.system}:{e.name}\n" for e in EVENTS if self.enabled[e])

    # -- the engine's observers ----------------------------------------------------

    def set_tracing_on(self, on: bool) -> None:
        """``rb_simple_write()``: recording on or off; off wakes the
        ``trace_pipe`` readers (``ring_buffer_wake_waiters()``), so that one
        that has read something sees its EOF."""
        self.tracing_on = on
        if not on:
            self.ring.wake()

    def read_pipe(self, size: int, block: bool = True,
                  interrupted: Callable[[], bool] = lambda: False,
                  read_before: bool = False) -> bytes:
        """``trace_pipe``: ``tracing_read_pipe()`` of the ring.  As
        ``tracing_wait_pipe()`` has it, a reader that has read something
        (``iter->pos``, ``read_before``) gets EOF once the ring is empty and
        tracing is off; one that has read nothing still waits, so that
        ``cat trace_pipe`` may be started before tracing is turned on."""
        return self.ring.read_pipe(size, block, interrupted,
                                   lambda: read_before and not self.tracing_on)

    def _recording(self, event: Event) -> bool:
        return self.tracing_on and self.enabled[event]

    def on_call(self, call: MigrateCall) -> None:
        """mm_migrate_pages_start / mm_migrate_pages, where migrate_pages() has them."""
        event = MM_MIGRATE_PAGES if call.end else MM_MIGRATE_PAGES_START
        if not self._recording(event):
            return
        sym = (MODE_VALUE[call.mode], int(call.reason))
        values = ((call.nr_succeeded, call.nr_failed, call.nr_thp_succeeded,
                   call.nr_thp_failed, call.nr_thp_split, call.nr_split) + sym
                  if call.end else sym)
        self.ring.append(event, call.time - self.boot, values)

    def on_batches(self, r: BatchRecords) -> None:
        """migrate_offload_batch, one per batch of the group."""
        if not self._recording(MIGRATE_OFFLOAD_BATCH):
            return
        reason = int(MigrateReason.from_label(r.reason))
        cause = r.fallback_cause or "none"
        migrator = r.migrator
        ff = r.first_folio_seconds  # NaN: no folio remapped, 0 in the event
        ff_ns = np.rint(np.where(np.isnan(ff), 0.0, ff) * 1e9).astype(np.int64).tolist()
        inacc_ns = np.rint(r.longest_inaccessible() * 1e9).astype(np.int64).tolist()
        append = self.ring.append
        for end, folios, pages, ok, failed, off, fb, ff1, in1 in zip(
                (r.end - self.boot).tolist(), r.nr_folios.tolist(), r.nr_pages.tolist(),
                r.nr_succeeded.tolist(), r.nr_failed.tolist(), r.nr_offloaded.tolist(),
                r.nr_fallback.tolist(),
                ff_ns, inacc_ns, strict=True):
            append(MIGRATE_OFFLOAD_BATCH, end,
                   (migrator, r.target_nid, reason, folios, pages, ok, failed,
                    off, fb, cause if fb else "none", ff1, in1))

    def on_clear(self, time: float, provider: str, how: str, nid: int, order: int,
                 seconds: float, cpu_seconds: float) -> None:
        """migrate_offload_clear, one per folio a fault got zeroed."""
        if self._recording(MIGRATE_OFFLOAD_CLEAR):
            self.ring.append(MIGRATE_OFFLOAD_CLEAR, time - self.boot,
                             (provider, nid, order, 1 << order, how, round(seconds * 1e9),
                              round(cpu_seconds * 1e9)))
