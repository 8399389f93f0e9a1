"""The default migrator: the vanilla kernel, no batch copy."""

from __future__ import annotations

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
