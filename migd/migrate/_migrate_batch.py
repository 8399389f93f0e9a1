"""``migrate_pages_batch()`` and ``migrate_pages_sync()`` (mm/migrate.c): one batch.

Per batch: the unmap loop with its retry passes, one batched TLB flush
(``try_to_unmap_flush()``), the batch copy when ``migrate_should_offload()``
holds (``_batch``), the move loop and the undo of whatever is left; sync modes
first run the batch async, then each failed folio alone in the call's mode.
Functions of the engine, named as the kernel's: ``_engine`` keeps the call
(``migrate_pages()``: isolation, the batch loop, -ENOMEM, the books of a call);
splitting here keeps each module one level of the kernel's call tree
(rejected: methods of a 535-line engine class).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import trio

from ..mm import MigrateMode, MigrateReason
from ..offload import CpuMigrator, Offload
from ._batch import batch_copy
from ._stats import NO_FOLIOS, MigrateStats
from ._steps import (
    Tally,
    count_failed,
    count_untried,
    folio_lock,
    move,
    record_batch,
    undo,
    unmap_loop,
)
from ._vclock import unmap_clean
from ._way import Path, Way, should_offload, still_alone

if TYPE_CHECKING:
    from ._engine import MigrationEngine

NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY

@dataclass
class Ctx:
    """One call's context, as the batch functions see it."""

    target_nid: int
    reason: MigrateReason
    offload: Offload
    stats: MigrateStats
    mode: MigrateMode = MigrateMode.MIGRATE_ASYNC  # the call's
    #: The batch's way (``_way.batch_way``); None only outside a batch.
    way: Way | None = None
    #: The caller runs PF_MEMALLOC (direct compaction): it never sleeps on a
    #: folio lock (``migrate_folio_unmap()``'s ``goto out``).
    memalloc: bool = False
    #: Folios whose ``get_new_folio()`` returns NULL (sorted heads, large
    #: folios only): the caller's allocation callback, which the kernel
    #: takes as an argument.  Replay uses it for a traced THP split on -ENOMEM.
    alloc_fails: np.ndarray | None = None
    #: The async try of a sync call: its failures are retried (the ledger
    #: says so; the books do not count them failed).
    retried: bool = False
    #: The running batch's tally (``_steps.Tally``), shared by its ctx copies.
    tally: Tally | None = None
    #: The batch's first folio's place in its call (``CpuModel.cold_folio_us``).
    pos: int | None = None

    @property
    def name(self) -> str:
        """Whose books: the migrator's only for a batch it takes, else ``none``."""
        if self.way is not None:
            return self.way.name
        return (self.offload.migrator.name if should_offload(self.offload, self.reason)
                else CpuMigrator.name)


@dataclass
class BatchResult:
    """What one ``migrate_pages_batch()`` leaves: rc, the folios that failed
    (at the source), the parts of folios split on -ENOMEM, and the folios never
    tried because -ENOMEM stopped it."""

    rc: int
    left: np.ndarray
    split: np.ndarray
    untried: np.ndarray
    #: The books the batch went in (``Ctx.name``).
    name: str = CpuMigrator.name


async def migrate_pages_sync(engine: MigrationEngine, ctx: Ctx, batch: np.ndarray,
                              failed: list[np.ndarray]) -> BatchResult:
    """``migrate_pages_sync()``: the batch under MIGRATE_ASYNC with
    NR_MAX_MIGRATE_ASYNC_RETRY (3) passes, then every folio that failed on
    its own, in the call's mode, with NR_MAX_MIGRATE_SYNC_RETRY (7) passes:
    only there is a locked folio waited for (no lock is held on others)."""
    astats = MigrateStats()
    a = await migrate_pages_batch(
        engine, replace(ctx, stats=astats, retried=True), batch,
        MigrateMode.MIGRATE_ASYNC, NR_MAX_MIGRATE_ASYNC_RETRY)
    s = ctx.stats
    s.nr_succeeded += astats.nr_succeeded
    s.nr_folios_succeeded += astats.nr_folios_succeeded
    s.nr_thp_succeeded += astats.nr_thp_succeeded
    s.nr_thp_split += astats.nr_thp_split
    s.nr_split += astats.nr_split
    s.nr_untried_pages += astats.nr_untried_pages
    s.nr_folios_untried += astats.nr_folios_untried
    s.cpu_copy_seconds += astats.cpu_copy_seconds
    if a.rc < 0:
        s.nr_failed_pages += astats.nr_failed_pages
        s.nr_folios_failed += astats.nr_folios_failed
        s.nr_thp_failed += astats.nr_thp_failed
        return a
    s.nr_thp_failed += astats.nr_thp_split
    if a.left.size == 0:
        return BatchResult(astats.nr_split, a.left, a.split, NO_FOLIOS)
    # Every failure is retried synchronously, one folio at a time; the
    # async attempt's failures are not counted (they are retried; its ledger
    # record says so).
    nr_failed = astats.nr_split
    still, splits = [], [a.split]
    for i, folio in enumerate(a.left.tolist()):
        try:
            b = await migrate_pages_batch(
                engine, ctx, np.array([folio], dtype=np.int64), ctx.mode,
                NR_MAX_MIGRATE_SYNC_RETRY)
        except BaseException:  # cancelled in folio_lock(): the rest fails, intact
            rest = np.concatenate([*splits, a.left[i:]])
            count_failed(engine, ctx, rest, outside_batch=True)
            failed += (*still, rest)
            raise
        still.append(b.left)
        splits.append(b.split)
        if b.rc < 0:
            rest = a.left[i + 1:]
            count_untried(engine, ctx, rest)
            return BatchResult(b.rc, np.concatenate(still), np.concatenate(splits),
                          np.concatenate([b.untried, rest]))
        nr_failed += b.rc
    return BatchResult(nr_failed, np.concatenate(still), np.concatenate(splits), NO_FOLIOS)


async def migrate_pages_batch(engine: MigrationEngine, ctx: Ctx, folios: np.ndarray,
                              mode: MigrateMode, nr_pass: int, may_split: bool = True
                              ) -> BatchResult:
    """``migrate_pages_batch()``, shielded from cancellation: between unmap
    and move the folios are reachable only through migration entries, and
    a batch ends in a move or an undo, never half-way.  Its only long wait,
    an offloaded copy, is cut short by :meth:`MigrationEngine.stop` instead."""
    if mode is not MigrateMode.MIGRATE_ASYNC:
        # Before the shield, nothing of the batch unmapped yet: a caller
        # cancelled while it sleeps in folio_lock() leaves nothing behind.
        await folio_lock(engine, folios, mode, ctx.memalloc)
    with trio.CancelScope(shield=True):
        return await _migrate_pages_batch_shielded(engine, ctx, folios, mode, nr_pass,
                                                   may_split)


async def _migrate_pages_batch_shielded(engine: MigrationEngine, ctx: Ctx, folios: np.ndarray,
                                        mode: MigrateMode, nr_pass: int,
                                        may_split: bool) -> BatchResult:
    t_entry = trio.current_time()
    ctx.tally = Tally()  # this batch's; the ctx copies below share it
    mem = engine.memory
    nr_pages = int(mem.folio_nr_pages(folios).sum())
    nosplit = ctx.reason == MigrateReason.MR_NUMA_MISPLACED or not may_split
    way = ctx.way
    clean = (unmap_clean(engine, ctx, folios)
             if way.path is Path.CLOSED_FORM and still_alone(engine) else None)
    unslept = 0.0  # the closed form's unmap time, slept with the flush
    if clean is not None:
        (todo, unslept), left, splits, rc_saved, untried, passes = (
            clean, NO_FOLIOS, [], 0, NO_FOLIOS, 1)
    else:  # not clean (or not alone): step by step
        ctx = replace(ctx, way=way.general())
        todo, left, splits, rc_saved, untried, passes = await unmap_loop(
            engine, ctx, folios, mode, nr_pass, nosplit)
    copied = None
    first_folio = None
    inaccessible: list[np.ndarray] = []
    tenants: list[np.ndarray] = []  # each timed folio's owner, aligned
    cpu_copied: list[np.ndarray] = []  # and whether the move loop copied it
    orders: list[np.ndarray] = []  # and its order
    if not todo.src.size:  # nothing reached a copy: no migrator took the batch
        ctx = replace(ctx, way=ctx.way.vanilla())
    else:
        # try_to_unmap_flush() (and the closed form's unmap loop)
        await engine.clock.spend(unslept + engine.profile.cpu.flush_us * 1e-6)
        copied = await batch_copy(engine, ctx, todo.src, todo.dst, todo.nr_movable_ops)
        if not copied.taken and ctx.way.vanilla() is not ctx.way:
            ctx = replace(ctx, way=ctx.way.vanilla())  # the move loop copies: vanilla's books
        for _ in range(nr_pass):
            # folio_migrate_mapping(): someone took a reference -> -EAGAIN
            busy = engine.memory.refcount[todo.src] != 1
            any_busy = bool(busy.any())
            movable = todo.take(~busy) if any_busy else todo
            if movable.src.size:
                t_remap, by_cpu = await move(engine, ctx, movable)
                cpu_copied.append(by_cpu)
                if first_folio is None:
                    first_folio = float(t_remap[0] - t_entry)
                inaccessible.append(t_remap - movable.t_unmap)
                tenants.append(mem.mapping[movable.dst])  # the source is freed
                orders.append(mem.folio_order[movable.dst])
            if not any_busy:
                break
            todo = todo.take(busy)
        else:
            inaccessible.append(undo(engine, todo) - todo.t_unmap)
            tenants.append(mem.mapping[todo.src])
            cpu_copied.append(np.zeros(todo.src.size, dtype=np.bool_))
            orders.append(mem.folio_order[todo.src])
            left = np.concatenate([left, todo.src])
        if copied.choice is not None:  # the whole batch, as the fast path measures it
            engine.fast.way_done(ctx.offload.migrator, copied.choice,
                               trio.current_time() - t_entry, copied.nr_bytes)
    pages_failed = count_failed(engine, ctx, left)
    count_untried(engine, ctx, untried)
    if rc_saved < 0 and ctx.retried:  # -ENOMEM: migrate_pages_sync() retries nothing
        ctx = replace(ctx, retried=False)
    nr_failed = int(left.size) + len(splits)
    record_batch(engine, ctx, mode, folios.size, nr_pages, nr_failed, len(splits),
                 int(untried.size), pages_failed, copied, t_entry, first_folio, inaccessible,
                 tenants, cpu_copied, orders, passes)
    split = np.concatenate(splits) if splits else NO_FOLIOS
    return BatchResult(rc_saved or nr_failed, left, split, untried, ctx.name)
