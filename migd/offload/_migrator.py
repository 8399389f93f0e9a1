"""What a migrator is: the RFC's ``struct migrator`` and the batch it copies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw import Clock, HardwareProfile
from ..mm import FOLIO_CONTENT_COPIED, PAGE_SIZE, PhysMemory


@dataclass
class CopyBatch:
    """The source and destination folio lists handed to ``migrate_offc()``.

    Only batch-eligible folios are here (right reason, expected refcount, not
    movable_ops); all are unmapped and locked.  A migrator calls
    :meth:`mark_copied` for each folio whose contents it has copied completely
    (FOLIO_CONTENT_COPIED); the core copies every unmarked folio on the CPU.
    """

    memory: PhysMemory
    src: np.ndarray
    dst: np.ndarray
    orders: np.ndarray
    clock: Clock
    profile: HardwareProfile
    #: The engine's word that nothing can interleave with this batch (virtual
    #: clock, no fault armed, no other call in flight): a migrator may then
    #: charge its modelled time in closed form, with one sleep.
    closed_form: bool = False

    @property
    def nr_folios(self) -> int:
        return int(self.src.size)

    @property
    def nr_pages(self) -> int:
        return int(np.left_shift(1, self.orders.astype(np.int64)).sum())

    @property
    def nr_bytes(self) -> int:
        return int((np.left_shift(1, self.orders.astype(np.int64)) * PAGE_SIZE).sum())

    def mark_copied(self, sel: np.ndarray | slice = slice(None)) -> None:
        """``folio_set_content_copied()`` on the source folios selected by ``sel``."""
        self.memory.flags[self.src[sel]] |= FOLIO_CONTENT_COPIED


class Migrator:
    """Base of every migrator: the RFC's ``struct migrator``.

    What the RFC's struct holds and no more: a ``name``, the copy callback
    :meth:`migrate_offc`, the preferred batch size (:meth:`batch_pages`), and
    the CPU threads its copy runs on (``cpu_threads``: 0 for a DMA engine; the
    engine's compiled fast path runs CPU-copy migrators inline).  Returning a
    negative errno means "not all copied": unmarked folios fall back to the
    CPU, and the errno names the fallback's cause (``-EOPNOTSUPP`` to decline a
    batch).  Whether to offload a batch at all under ``auto`` is the engine's
    choice (``MigrationEngine.chooser``), not the migrator's: it needs the
    whole batch's timing, which only the engine sees.
    """

    name: str = ""
    #: CPU threads the copy runs on (0: not a CPU copy).
    cpu_threads: int = 0
    #: Automatic choice: the engine declines (-EOPNOTSUPP) the batches the
    #: CPU copies faster, as learnt from this machine's copies.
    auto: bool = False

    async def migrate_offc(self, batch: CopyBatch) -> int:
        raise NotImplementedError

    def compiled_copy(self):
        """The batch copy as the engine's compiled fast path can run it
        (``_dcbm_fast.CompiledCopy``), or None: CPU-copy migrators need none
        (``cpu_threads``), others take the general path's ``migrate_offc()``."""
        return None

    @property
    def param(self) -> int:
        """Channels or threads: part of what the automatic choice learns per."""
        return 0

    def batch_pages(self, nr_max_batched_migration: int) -> int:
        """Preferred batch size in base pages; the core bounds it."""
        return nr_max_batched_migration

    def __repr__(self) -> str:
        return f"<migrator {self.name}>"
