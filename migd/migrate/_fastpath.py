"""Choosing and running the compiled fast path of ``migrate_pages_batch()``.

On the real clock, with no fault armed, a batch whose folios all unmap at once
needs none of the engine's Python: ``_kernels.migrate_pages_batch_cpu`` runs
whole batches — unmap, flush, the copy, the move loop — in one compiled call.
This module runs the batches whose way (``_way.batch_way``) is ``COMPILED``,
with the way's copier: the vanilla order (``folio_mc_copy()`` folio by folio
in the move loop), the batch copy on ``threads`` CPU threads, or the batch
copy on DMA channels' copy threads (``Migrator.compiled_copy()``).

It also owns the automatic CPU/offload choice: one :class:`OffloadChooser`
per migrator, fed with the whole batch's time both ways.  Rejected: the
chooser inside the migrator (five methods and a side channel on what the RFC
keeps a plain struct, and the migrator cannot see the unmap and move it trades
against).
"""

from __future__ import annotations

import time

import numpy as np
import trio

from ..mm import PAGE_SIZE, MigrateMode, cpu_threads_busy, wake_helpers
from ..offload import NO_COMPILED_COPY, CpuMigrator, Migrator
from . import _kernels as _k
from ._auto import OffloadChooser
from ._stats import BatchRecords, EngineBooks
from ._way import Way

#: Longest one compiled fast-path call runs before the event loop gets a turn.
#: The call releases the GIL, so threads (the FUSE tree's readers) run during
#: it; only trio tasks wait.  Each call costs ~150 us of cache-cold Python
#: after it, hence slices long enough to amortise that to ~1% of a 2 MiB copy.
FAST_PATH_SLICE_NS = 8_000_000

class FastPath:
    """The compiled fast path and the automatic choice, for one engine."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self._choosers: dict[int, OffloadChooser] = {}
        self._rows = np.zeros((4096, _k.NR_COLUMNS), dtype=np.int64)  # batch timings

    def chooser(self, migrator: Migrator) -> OffloadChooser:
        """The automatic choice's estimates for ``migrator`` (made on first use)."""
        c = self._choosers.get(id(migrator))
        if c is None:
            c = self._choosers[id(migrator)] = OffloadChooser()
        return c

    def choose(self, migrator: Migrator, nr_folios: int, nr_pages: int) -> tuple:
        """Under ``auto``: ``(cell, offload?)`` for a batch of this size."""
        c = self.chooser(migrator)
        key = c.key(migrator.param, nr_folios, nr_pages)
        return key, c.offload(key)

    def way_done(self, migrator: Migrator, choice: tuple, seconds: float,
                 nr_bytes: int) -> None:
        """``nr_bytes`` went the ``choice`` way in ``seconds`` (unmap, copy, move)."""
        if nr_bytes:
            key, offloaded = choice
            self.chooser(migrator).observe(key, offloaded, seconds / nr_bytes)

    def run(self, ctx, way: Way, folios: np.ndarray, cum: np.ndarray, start: int,
            bound: int, crossing: bool, dst: np.ndarray, scratch: np.ndarray,
            times: np.ndarray) -> int:
        """Clean batches in one compiled call; returns the next folio to migrate
        (``start`` when the first batch needs the general path).

        Same steps as the engine's ``migrate_pages_batch`` without its ~50 us of
        Python control flow per batch, which for a 2 MiB folio is a quarter of
        its copy.
        """
        eng = self._engine
        mem = eng.memory
        offset = trio.current_time() - time.perf_counter()
        deadline = time.perf_counter_ns() + FAST_PATH_SLICE_NS
        if way.threads > 1:
            wake_helpers(way.threads)
        dma = way.dma or NO_COMPILED_COPY
        j = nr_batches = 0
        try:
            if way.dma is not None:
                dma.claim()
            j, nr_batches = _k.migrate_pages_batch_fast(
                *eng.kernel_state, mem.arena_base, mem.page_bytes, folios, cum, start,
                ctx.target_nid, bound, crossing, deadline, way.threads, dst, scratch,
                self._rows, dma.ctl, dma.stats, dma.timeout_ns, dma.nr_cpus, dma.cpuclock,
                times[0], times[1])
        finally:
            rows = self._rows[:nr_batches]
            if way.dma is not None:  # the channels are released, whatever happened
                moved = dst[start:j]  # the migrated folios' cgroups, charged the time
                dma.book_and_release(rows[:, _k.NR_FOLIOS], rows[:, _k.NR_CHAN],
                                     rows[:, _k.NR_FAILED], mem.mem_map["mapping"][moved],
                                     mem.folio_nr_pages(moved))
        if nr_batches:
            self._record(ctx, rows, offset, way, times[:, start:j], dst[start:j])
            if way.choice is not None:
                self.way_done(ctx.offload.migrator, way.choice,
                              float((rows[:, _k.T_END] - rows[:, _k.T_ENTRY]).sum()) * 1e-9,
                              int(rows[:, _k.NR_PAGES].sum()) * PAGE_SIZE)
        return int(j)

    def _record(self, ctx, rows: np.ndarray, offset: float, way: Way,
                times: np.ndarray, moved: np.ndarray) -> None:
        """Books and records of the batches the fast path ran: each a batch of
        many folios, which the kernel runs MIGRATE_ASYNC whatever the call's
        mode (``migrate_pages_sync()`` tries the batch async first)."""
        books: EngineBooks = self._engine.books
        t = rows[:, :_k.NR_FOLIOS] * 1e-9 + offset  # trio time
        nr_folios = rows[:, _k.NR_FOLIOS]
        nr_pages = rows[:, _k.NR_PAGES]
        total_folios, total_pages = int(nr_folios.sum()), int(nr_pages.sum())
        st = ctx.stats
        st.nr_succeeded += total_pages
        st.nr_folios_succeeded += total_folios
        st.nr_thp_succeeded += int(rows[:, _k.NR_THP].sum())
        name = way.name  # the migrator's books only for the batches it copied
        books.count_folios(name, ctx.reason.label, total_folios, total_pages, True)
        books.add_batches(name, len(rows))
        # the move loop's copies (vanilla's, a timed-out DMA batch's), the
        # copies alone; a DMA batch copy is the channels', no CPU's
        move_copy = int(rows[:, _k.MOVE_COPY_NS].sum())
        mem = self._engine.memory
        owners, sizes = mem.mem_map["mapping"][moved], mem.folio_nr_pages(moved)
        if move_copy:
            books.add_cpu_seconds(CpuMigrator.name, move_copy * 1e-9, st, owners, sizes)
        if way.threads > 0:
            copy = float((t[:, _k.T_COPIED] - t[:, _k.T_UNMAPPED]).sum())
            books.add_cpu_seconds(name, copy * cpu_threads_busy(way.threads, False), st,
                                  owners, sizes)
        cause, fallback = None, np.zeros(len(rows), dtype=np.int64)
        if way.declined:
            cause, fallback = "EOPNOTSUPP", nr_folios
            books.add_fallback(cause, total_folios)
        elif rows[-1, _k.NR_FAILED]:  # a DMA wait timed out: only ever the last batch
            cause, fallback = "ETIMEDOUT", rows[:, _k.NR_FAILED]
            books.add_fallback(cause, int(fallback.sum()))
        entry, first, end = t[:, _k.T_ENTRY], t[:, _k.T_FIRST], t[:, _k.T_END]
        # Each folio from its own unmap to its own remap.
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(nr_folios, out=offsets[1:])
        inacc = (times[1] - times[0]) * 1e-9
        self._engine.machine.wake_remapped()
        offloaded = nr_folios if way.taken or way.declined else np.zeros_like(nr_folios)
        books.emit(BatchRecords(
            ctx.reason.label, name, MigrateMode.MIGRATE_ASYNC.value, ctx.target_nid, cause,
            nr_folios, nr_pages, np.zeros(len(rows), dtype=np.int64), offloaded, fallback,
            entry, end, first - entry, inacc, offsets))
