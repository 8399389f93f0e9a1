"""What a migrator is: the RFC's ``struct migrator`` and the batch it copies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw import Clock, HardwareProfile
from ..mm import FOLIO_CONTENT_COPIED, PAGE_SIZE, PhysMemory
from ._auto import OffloadChooser


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
    #: Set by an automatic-choice migrator: (cell, offloaded) of its decision.
    choice: tuple | None = None

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
    """Base of every migrator (``struct migrator``).

    Subclasses set ``name`` and implement :meth:`migrate_offc`.  Returning a
    negative errno means "not all copied": unmarked folios fall back to the CPU,
    and the errno names the fallback's cause (``-EOPNOTSUPP`` to decline a batch).
    """

    name: str = ""
    #: Automatic choice: decline (-EOPNOTSUPP) the batches the CPU copies
    #: faster, as learnt by :class:`OffloadChooser` from this machine's copies.
    auto: bool = False
    _chooser: OffloadChooser | None = None

    async def migrate_offc(self, batch: CopyBatch) -> int:
        raise NotImplementedError

    @property
    def param(self) -> int:
        """Channels or threads: part of what the automatic choice learns per."""
        return 0

    def choose_way(self, nr_folios: int, nr_pages: int) -> tuple:
        """Under ``auto``: ``(cell, offload?)`` for a batch of this size."""
        if self._chooser is None:
            self._chooser = OffloadChooser()
        key = self._chooser.key(self.param, nr_folios, nr_pages)
        return key, self._chooser.offload(key)

    def choose_offload(self, batch: CopyBatch) -> bool:
        """Under ``auto``, whether to copy ``batch`` (else the caller declines it)."""
        if not self.auto:
            return True
        batch.choice = self.choose_way(batch.nr_folios, batch.nr_pages)
        return batch.choice[1]

    def fast_path_threads(self, offload: bool) -> int:
        """Copy threads for the engine's compiled CPU path on the chosen way
        (1: the CPU's own copy); 0 when the way needs ``migrate_offc``."""
        return getattr(self, "cpu_threads", 0) if offload else 1

    def way_done(self, choice: tuple, seconds: float, nr_bytes: int) -> None:
        """The core's report: ``nr_bytes`` went the ``choice`` way in ``seconds``."""
        if self._chooser is not None and nr_bytes:
            key, offloaded = choice
            self._chooser.observe(key, offloaded, seconds / nr_bytes)

    def batch_done(self, batch: CopyBatch, seconds: float) -> None:
        """The core's report: ``batch``'s unmap, copy and move took ``seconds``."""
        if batch.choice is not None:
            self.way_done(batch.choice, seconds, batch.nr_bytes)

    def chooser_statistics(self) -> dict:
        return self._chooser.statistics() if self._chooser is not None else {}

    def batch_pages(self, nr_max_batched_migration: int) -> int:
        """Preferred batch size in base pages; the core bounds it."""
        return nr_max_batched_migration

    def __repr__(self) -> str:
        return f"<migrator {self.name}>"
