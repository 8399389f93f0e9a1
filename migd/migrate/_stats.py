"""Counters and histograms the engine keeps (vmstat items, tracepoint-like records)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..mm import MigrateMode, MigrateReason

#: vmstat items of page migration, as /proc/vmstat names them.
VMSTAT_ITEMS = ("pgmigrate_success", "pgmigrate_fail", "thp_migration_success",
                "thp_migration_fail", "thp_migration_split")


@dataclass
class MigrateStats:
    """``struct migrate_pages_stats`` for one ``migrate_pages()`` call."""

    nr_succeeded: int = 0  # base pages
    nr_failed_pages: int = 0
    nr_thp_succeeded: int = 0
    nr_thp_failed: int = 0
    nr_thp_split: int = 0
    nr_split: int = 0
    nr_folios_succeeded: int = 0
    nr_folios_failed: int = 0


class Histogram:
    """Cumulative-ready bucket counts with fixed upper bounds (Prometheus style)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds = list(bounds)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: np.ndarray) -> None:
        if values.size <= 16:  # bisect beats numpy's call overhead here
            for v in values.tolist():
                self.observe(v)
            return
        if values.size == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.sum += float(values.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(tuple(self.bounds.tolist()), tuple(self.counts.tolist()),
                                 self.sum)


@dataclass(frozen=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # per bucket, not cumulative; last is +Inf
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)


#: 1 us .. ~10 s, x2 steps: first-folio latency and inaccessible time.
SECONDS_BUCKETS = tuple(1e-6 * 2.0 ** i for i in range(24))
#: 1 .. 262144 base pages, x2 steps.
PAGES_BUCKETS = tuple(float(2 ** i) for i in range(19))


class MigrateCall(NamedTuple):
    """One end of a ``migrate_pages()`` call, what mm/migrate.c traces there:
    ``trace_mm_migrate_pages_start(mode, reason)`` on entry (``end`` False,
    counts 0) and ``trace_mm_migrate_pages()`` with the call's
    ``struct migrate_pages_stats`` on return (``end`` True).  One record per
    call and end, not per batch: a tracer needs the call's totals, and the
    per-batch detail already goes out as :class:`BatchRecords`."""

    end: bool
    time: float  # trio clock, seconds
    mode: MigrateMode
    reason: MigrateReason
    nr_succeeded: int = 0  # base pages
    nr_failed: int = 0  # base pages (stats.nr_failed_pages)
    nr_thp_succeeded: int = 0  # THPs
    nr_thp_failed: int = 0
    nr_thp_split: int = 0
    nr_split: int = 0  # large folios split (THP or not)


class BatchRecord(NamedTuple):
    """One ``migrate_pages_batch()`` as the tracepoints would report it."""

    reason: str
    migrator: str
    mode: str
    target_nid: int
    nr_folios: int  # folios passed to the batch
    nr_pages: int
    nr_succeeded: int  # folios
    nr_failed: int  # folios (after retries, undo, split)
    nr_offloaded: int  # folios handed to the migrator's batch copy
    nr_fallback: int  # of those, copied by the CPU fallback
    fallback_cause: str | None
    start: float
    end: float
    first_folio_seconds: float | None  # batch entry -> first folio remapped
    inaccessible_seconds: np.ndarray  # per folio, unmap -> remap


@dataclass(frozen=True)
class BatchRecords:
    """Consecutive batches of one ``migrate_pages()`` call, column-wise.

    The engine reports batches in groups (one per compiled fast-path call,
    one per batch otherwise) because building an object per batch cost more
    than running a 2 MiB batch's bookkeeping.  Iterating yields
    :class:`BatchRecord` rows.
    """

    reason: str
    migrator: str
    mode: str
    target_nid: int
    fallback_cause: str | None
    nr_folios: np.ndarray
    nr_pages: np.ndarray
    nr_failed: np.ndarray
    nr_offloaded: np.ndarray
    nr_fallback: np.ndarray
    start: np.ndarray
    end: np.ndarray
    first_folio_seconds: np.ndarray  # NaN where no folio was remapped
    inaccessible_seconds: np.ndarray  # every folio of every batch, in order
    inaccessible_offsets: np.ndarray  # batch b's folios: [off[b], off[b + 1])

    def __len__(self) -> int:
        return int(self.nr_folios.size)

    def longest_inaccessible(self) -> np.ndarray:
        """Each batch's longest per-folio inaccessible time (0 if none was unmapped)."""
        off = self.inaccessible_offsets
        some = off[1:] > off[:-1]
        out = np.zeros(len(self))
        if self.inaccessible_seconds.size:
            out[some] = np.maximum.reduceat(self.inaccessible_seconds, off[:-1][some])
        return out

    def __iter__(self):
        for b in range(len(self)):
            ff = float(self.first_folio_seconds[b])
            lo, hi = self.inaccessible_offsets[b], self.inaccessible_offsets[b + 1]
            yield BatchRecord(
                self.reason, self.migrator, self.mode, self.target_nid,
                int(self.nr_folios[b]), int(self.nr_pages[b]),
                int(self.nr_folios[b] - self.nr_failed[b]), int(self.nr_failed[b]),
                int(self.nr_offloaded[b]), int(self.nr_fallback[b]), self.fallback_cause,
                float(self.start[b]), float(self.end[b]), None if ff != ff else ff,
                self.inaccessible_seconds[lo:hi])


@dataclass(frozen=True)
class EngineStatistics:
    """A frozen snapshot of everything the engine counts."""

    vmstat: dict[str, int]  # totals, /proc/vmstat names
    vmstat_by_reason: dict[str, dict[str, int]]
    #: (migrator, reason) -> counts of folios/bytes migrated and failed
    folios_migrated: dict[tuple[str, str], int]
    folios_failed: dict[tuple[str, str], int]
    bytes_migrated: dict[tuple[str, str], int]
    bytes_failed: dict[tuple[str, str], int]
    batches: dict[str, int]  # by migrator
    fallbacks: dict[str, int]  # folios, by cause
    cpu_copy_seconds: dict[str, float]  # by migrator ("cpu" for the CPU paths)
    batch_pages: HistogramSnapshot
    first_folio_seconds: HistogramSnapshot
    inaccessible_seconds: HistogramSnapshot
    nr_max_batched_migration: int
