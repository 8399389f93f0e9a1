"""The default migrator: ``folios_mc_copy()``, serial CPU copy folio by folio."""

from __future__ import annotations

import time

from ._migrator import CopyBatch, Migrator


class CpuMigrator(Migrator):
    """What runs when no offload migrator is registered.

    The batch is copied before the move loop (the RFC's batch copy), so the
    first folio is remapped only after the whole batch is copied: the
    first-folio latency that offload trades against throughput.
    """

    name = "cpu"

    async def migrate_offc(self, batch: CopyBatch) -> int:
        await folios_mc_copy(batch)
        batch.mark_copied()
        return 0


async def folios_mc_copy(batch: CopyBatch) -> float:
    """Copy every folio of ``batch`` on this CPU; returns the CPU seconds spent."""
    if batch.clock.virtual:
        batch.memory.copy_folios(batch.dst, batch.src, batch.orders)
        seconds = float(batch.profile.cpu.copy_seconds(batch.orders).sum())
        await batch.clock.spend(seconds)
        return seconds
    start = time.perf_counter()
    batch.memory.copy_folios(batch.dst, batch.src, batch.orders)
    return time.perf_counter() - start
