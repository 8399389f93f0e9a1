"""The default migrator: ``folios_mc_copy()``, serial CPU copy folio by folio."""

from __future__ import annotations

import time

import numpy as np

from ..hw import Clock, HardwareProfile
from ..mm import PhysMemory
from ..mm._copy import folios_mc_copy as _folios_mc_copy
from ._migrator import CopyBatch, Migrator


class CpuMigrator(Migrator):
    """What is active when no offload migrator is registered: the vanilla kernel.

    ``migrate_should_offload()`` is false for it, so the engine never calls
    :meth:`migrate_offc`: each folio is copied in the move loop
    (``folio_mc_copy()``) and remapped before the next is copied, which keeps
    the first-folio latency at the batch's unmap + flush + one copy (the
    published vanilla table: 166-208 us for n >= 2048 4K folios).
    """

    name = "cpu"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        await folios_mc_copy(batch.memory, batch.src, batch.dst, batch.clock, batch.profile)
        return 0


async def folios_mc_copy(memory: PhysMemory, src: np.ndarray, dst: np.ndarray, clock: Clock,
                         profile: HardwareProfile) -> float:
    """Copy folios ``src`` to ``dst`` on this CPU and mark each FOLIO_CONTENT_COPIED.

    Returns the CPU seconds spent: measured on the real clock, modelled on the
    virtual one (where the copy moves the arena's one word per page).
    """
    start = time.perf_counter()
    _folios_mc_copy(memory.arena_base, memory.page_bytes, memory.mem_map, dst, src)
    if clock.virtual:
        seconds = float(profile.cpu.copy_seconds(memory.folio_order[src]).sum())
        await clock.spend(seconds)
        return seconds
    return time.perf_counter() - start
