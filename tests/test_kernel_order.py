"""The order of migrate_pages_batch()'s steps, as mm/migrate.c runs them.

Vanilla kernel (and every batch ``migrate_should_offload()`` does not take):
the unmap loop unmaps the whole batch, ``try_to_unmap_flush()`` flushes once,
then the move loop calls ``migrate_folio_move()`` -> ``move_to_new_folio()``
-> ``folio_mc_copy()`` for each folio and remaps it before touching the next.
So when folio 0 is remapped, folio 1 is still unmapped and not yet copied.
With a batch copy (RFC v6: a migrator registered and the reason in its mask)
every eligible folio is copied before the move loop starts.

The observer is a task sleeping on the folio wait queue (as a faulting thread
sleeps on a migration entry): when folio 0's entry is gone it looks for folio
1's content on the target node.
"""

import errno

import numpy as np
import pytest
import trio

from migd.mm import MigrateReason, TenantSpec
from migd.mm._content import page_keys
from migd.offload import CopyBatch, Migrator, MtcopyMigrator

from .helpers import make_engine, make_machine

NR_FOLIOS = 8


class Decliner(Migrator):
    """A migrator that declines every batch, as RFC v6 lets it (-EOPNOTSUPP)."""

    name = "decliner"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        return -errno.EOPNOTSUPP


async def _state_at_first_remap(setup) -> dict:
    """Migrate a tenant's first folios node0 -> node1; return what an observer
    saw the moment folio 0 was remapped."""
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", NR_FOLIOS * 4096, order=0,
                                movable_ops=setup == "ineligible"))
    e = make_engine(m, True)
    if setup == "batch_copy":
        e.registry.register(MtcopyMigrator(1))
    elif setup == "declined":
        e.registry.register(Decliner())
    elif setup == "reason_not_in_mask":
        e.registry.register(MtcopyMigrator(1), 1 << MigrateReason.MR_COMPACTION)
    elif setup == "ineligible":
        e.registry.register(MtcopyMigrator(1))
    folios = m.tenant_folios(t)
    v0, v1 = (int(m.memory.index[f]) - t.vbase for f in folios[:2])  # tenant vpages
    key1 = page_keys(t.tid, np.array([v1]), t.version[[v1]])[0]
    node1 = m.memory.nodes[1]
    seen: dict = {}

    async def observer():
        while not t.migration_entry[v0]:
            await trio.sleep(0)  # until the unmap loop has run
        while t.migration_entry[v0]:
            await m.folio_wait()
        seen["folio1_unmapped"] = bool(t.migration_entry[v1])
        seen["folio1_copied"] = bool(
            (m.memory.arena[node1.start_pfn:node1.end_pfn, 0] == key1).any())

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(observer)
            await trio.sleep(0)
            r = await e.migrate_pages(folios, 1, MigrateReason.MR_DEMOTION)
    assert r.failed.size == 0 and m.check_integrity().ok
    return seen


@pytest.mark.parametrize("setup", ["vanilla", "declined", "reason_not_in_mask", "ineligible"])
async def test_folio_0_is_remapped_before_folio_1_is_copied(setup, autojump_clock):
    seen = await _state_at_first_remap(setup)
    assert seen == {"folio1_unmapped": True, "folio1_copied": False}


async def test_a_batch_copy_copies_folio_1_before_folio_0_is_remapped(autojump_clock):
    """The contrast: the RFC's batch copy runs between the flush and the move loop."""
    seen = await _state_at_first_remap("batch_copy")
    assert seen == {"folio1_unmapped": True, "folio1_copied": True}


async def test_compiled_vanilla_path_remaps_the_first_folio_early():
    """Real clock, compiled fast path: the vanilla first folio is remapped after
    the batch's unmap and one copy, long before the batch ends; a batch copy
    remaps it only after every folio is copied.  Medians over 16 batches of
    512 4K folios keep a preemption from deciding."""
    ratios = {}
    for setup in ("vanilla", "batch_copy"):
        m = make_machine(False)
        t = m.add_tenant(TenantSpec("t", 32 << 20, order=0))
        e = make_engine(m, False)
        if setup == "batch_copy":
            e.registry.register(MtcopyMigrator(1))
        recs = []
        e.subscribe(recs.extend)
        with trio.fail_after(30):
            await e.migrate_pages(m.tenant_folios(t), 1, MigrateReason.MR_DEMOTION)
        assert len(recs) == 16 and m.check_integrity().ok
        ratios[setup] = float(np.median([r.first_folio_seconds / (r.end - r.start)
                                         for r in recs]))
    assert ratios["vanilla"] < 0.5 < ratios["batch_copy"], ratios
