"""``move_pages(2)``'s ``do_pages_move()`` (mm/migrate.c): the syscall caller.

One ``migrate_pages()`` call (MIGRATE_SYNC, MR_SYSCALL) per run of consecutive
pages queued for the same node.  A page that is not queued flushes the run
before it: already on its node, or its folio already queued or moved by an
earlier page of this call (-EBUSY from ``folio_isolate_lru()``), so one address
per folio makes long runs and every base page of a THP makes one call per THP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..mm import PAGE_SIZE, MigrateMode, MigrateReason
from ._stats import NO_FOLIOS, MigrateResult, MigrateStats

if TYPE_CHECKING:
    from ._engine import MigrationEngine

async def do_pages_move(engine: MigrationEngine, tenant, vpages: np.ndarray,
                        nodes: int | np.ndarray, reason: MigrateReason) -> MigrateResult:
    """Move the page at each of ``vpages`` of ``tenant`` to its node (``nodes``:
    one for all, or one per page).

    As the kernel's loop: the first ``migrate_pages()`` call that does not
    return 0 ends the syscall (``goto out``); a positive count becomes
    ``err + nr_pages - i`` (``move_pages_and_store_status()``), where ``i``
    is the page whose lookup flushed the list, less one when that page was
    itself looked up (already on its node, or -EBUSY: "we have accounted for
    page i").  The pages after it are not looked at.  On its way out the call
    pays ``CpuModel.call_end_seconds`` of the bytes it moved.
    """
    await engine.clock.spend(engine.profile.cpu.call_us * 1e-6)
    result = await _runs(engine, tenant, vpages, nodes, reason)
    cpu = engine.profile.cpu
    if cpu.call_mib_us and result.stats.nr_succeeded:
        await engine.clock.spend(cpu.call_end_seconds(result.stats.nr_succeeded * PAGE_SIZE))
    return result


async def _runs(engine: MigrationEngine, tenant, vpages: np.ndarray,
                nodes: int | np.ndarray, reason: MigrateReason) -> MigrateResult:
    """``do_pages_move()``'s loop: one ``migrate_pages()`` per run."""
    vpages = np.asarray(vpages)
    heads = engine.memory.page_folio(tenant.pte_pfn[vpages])
    nodes = np.broadcast_to(np.asarray(nodes, dtype=np.int64), heads.shape)
    n = int(heads.size)
    results = []
    for lo, hi in do_pages_move_runs(heads, engine.memory.nid_of[heads], nodes):
        r = await engine.migrate_pages(heads[lo:hi], int(nodes[lo]), reason,
                                       MigrateMode.MIGRATE_SYNC)
        results.append(r)
        if r.rc:
            rc = r.rc
            if rc > 0:
                # flushed by a node change at page hi (not yet looked up), or by
                # page hi itself (same node, not queued: accounted), or the end
                rc += n - hi - int(hi < n and nodes[hi] == nodes[lo])
            return merge_results(results, rc)
    return merge_results(results)


def do_pages_move_runs(heads: np.ndarray, nids: np.ndarray, nodes: np.ndarray
                       ) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each run of pages ``do_pages_move()`` hands to one
    ``migrate_pages()`` call: consecutive pages queued for the same node.

    Queued: the first page of its folio in the call, not on its node already.
    Any other page flushes the list (``move_pages_and_store_status()``), so
    runs never span it; an empty list makes no call.
    """
    n = heads.size
    first = np.zeros(n, dtype=np.bool_)
    if n and (heads[1:] >= heads[:-1]).all():  # sorted (a tenant's pages, in order):
        first[0] = True  # each head's first page is where the head changes,
        first[1:] = heads[1:] != heads[:-1]  # what np.unique's sort finds, without it
    else:
        first[np.unique(heads, return_index=True)[1]] = True
    queued = np.flatnonzero(first & (nids != nodes))
    if queued.size == 0:
        return []
    cut = np.flatnonzero((np.diff(queued) != 1) | (np.diff(nodes[queued]) != 0)) + 1
    starts = queued[np.concatenate([[0], cut])]
    ends = queued[np.concatenate([cut - 1, [queued.size - 1]])] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def merge_results(results: list[MigrateResult], rc: int = 0) -> MigrateResult:
    """The calls of one ``move_pages()`` as one result (``rc``: the syscall's,
    0 when every call returned 0)."""
    stats = MigrateStats()
    for r in results:
        for f in stats.__dataclass_fields__:
            setattr(stats, f, getattr(stats, f) + getattr(r.stats, f))
    failed = np.concatenate([r.failed for r in results]) if results else NO_FOLIOS
    return MigrateResult(rc, stats, failed)
