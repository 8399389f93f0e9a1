"""The default migrator: the vanilla kernel, no batch copy."""

from __future__ import annotations

from ..mm import folios_mc_copy, folios_set_content_copied
from ._migrator import CopyBatch, Migrator


class CpuMigrator(Migrator):
    """What is active when no offload migrator is registered: the vanilla kernel.

    ``migrate_should_offload()`` is false for it, so the engine never hands it
    a batch: each folio is copied in the move loop (``folio_mc_copy()``) and
    remapped before the next is copied, which keeps the first-folio latency at
    the batch's unmap + flush + one copy (the published vanilla table: 166-208
    us for n >= 2048 4K folios).  Rejected: a batch copy on the CPU here (what
    migd did before): it made the vanilla first folio wait for the whole
    batch, +42..+77% against that table; ``mtcopy:1`` is that batch copy.
    """

    #: The tree's ``[none]``, and so every surface's name for it (the catalogue).
    name = "none"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        raise AssertionError("the vanilla path has no batch copy")


class FoliosMcCopy(Migrator):
    """The core's own batch copy, ``folios_mc_copy()`` on the calling CPU, for
    ``kernel/mm/migrate_offload/batch_copy = always``: the batch path without
    a registered migrator (the RFC's cover letter leans toward always-on).

    Every folio of the batch is copied between the TLB flush and the move
    loop, one CPU, no dispatch; its books are the vanilla kernel's (``none``).
    Not registrable: the engine picks it in ``_way.batch_way()`` for the
    batches no migrator takes.  Rejected: registering ``mtcopy:1`` instead
    (it would own the registry, and its virtual cost carries a thread
    dispatch the core's loop does not pay).
    """

    name = "none"

    @property
    def cpu_threads(self) -> int:
        return 1

    async def migrate_offc(self, batch: CopyBatch) -> int:
        mem = batch.memory
        if batch.clock.virtual:
            folios_set_content_copied(mem.mem_map, batch.src)
            mem.copy_folios(batch.dst, batch.src, batch.orders)
            await batch.clock.spend(float(batch.profile.cpu.copy_seconds(batch.orders).sum()))
            return 0
        folios_mc_copy(mem.arena_base, mem.page_bytes, mem.mem_map, batch.dst, batch.src)
        return 0


#: The one instance the engine uses.
FOLIOS_MC_COPY = FoliosMcCopy()
