"""What a migrator is: the RFC's ``struct migrator`` and the batch it copies."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..dma import NR_CH_COLUMNS, new_ctl
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

    @cached_property
    def nr_pages(self) -> int:
        """Pages of the batch (its lists are not changed once handed over)."""
        return int(np.left_shift(1, self.orders.astype(np.int64)).sum())

    @property
    def nr_bytes(self) -> int:
        return self.nr_pages * PAGE_SIZE

    def mark_copied(self, sel: np.ndarray | slice = slice(None)) -> None:
        """``folio_set_content_copied()`` on the source folios selected by ``sel``."""
        self.memory.flags[self.src[sel]] |= FOLIO_CONTENT_COPIED


@dataclass
class CompiledCopy:
    """A batch copy the engine's compiled fast path runs without Python: the
    DMA layer's compiled ``folios_copy_dma`` on the channels whose control rows
    are ``ctl``, what :meth:`Migrator.compiled_copy` hands the engine.  The
    engine calls :meth:`claim` before the compiled call and
    :meth:`book_and_release` after it; a migrator books its own counters there.

    Rejected: handing the engine the migrator's own compiled function (numba
    compiles the fast path once per function passed, and caches none of it:
    every start would recompile it).
    """

    ctl: np.ndarray  # the channels' control rows (``dma.new_ctl``)
    stats: np.ndarray  # per channel: the ``dma.CH_*`` columns
    timeout_ns: int = 0  # each channel's wait
    #: CPUs this process may run on: the caller spins on a wait only when one
    #: is free beside the channels' threads.
    nr_cpus: int = 0
    #: The caller's CPU-time clock (0: none; a clock that stands still).
    cpuclock: int = 0

    def claim(self) -> None:
        """Take the channels for the compiled call."""

    def book_and_release(self, nr_folios: np.ndarray, nr_chan: np.ndarray,
                         nr_failed: np.ndarray, owners: np.ndarray | None = None,
                         weights: np.ndarray | None = None) -> None:
        """Book the batches the fast path ran (per batch: folios, channels
        claimed, folios a timed-out copy left to the CPU); release the channels.
        ``owners``/``weights``: the cgroups and bytes of the folios the call
        migrated, whom the channels' time is charged to."""


#: The compiled call's DMA arguments when its batch copy is not on DMA channels.
NO_COMPILED_COPY = CompiledCopy(new_ctl(0), np.zeros((0, NR_CH_COLUMNS), dtype=np.int64))


class Migrator:
    """Base of every migrator: the RFC's ``struct migrator``.

    What the RFC's struct holds and no more: a ``name``, the copy callback
    :meth:`migrate_offc`, the preferred batch size (:meth:`batch_pages`), and
    what the engine's compiled fast path needs to run the copy itself: the
    CPU threads it runs on (``cpu_threads``: 0 for a DMA engine) or its
    :meth:`compiled_copy`.  The engine knows no migrator by name: all it
    needs is here.  Its tunables and counters are declared in its catalogue
    entry (``_catalogue``), which the daemon builds its files from.  Returning a
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

    #: The provider's ``clear_folio`` operation is there (the newest
    #: iteration's ``mm_offload_provider``); see :meth:`clear_folio`.
    clears: bool = False

    async def migrate_offc(self, batch: CopyBatch) -> int:
        raise NotImplementedError

    def enable(self) -> None:
        """What the driver does before ``mm_offload_register()`` (the newest
        dcbm acquires its channels); OSError refuses the registration."""

    def disable(self) -> None:
        """What the driver does after ``mm_offload_unregister()`` returned."""

    async def clear_folio(self, memory, clock, profile, pfn: int, order: int,
                          hint: int | None) -> int:
        """``clear_folio``: zero the folio at ``pfn``; -errno: the caller clears."""
        return -errno.EOPNOTSUPP

    def compiled_copy(self) -> CompiledCopy | None:
        """The batch copy as the engine's compiled fast path can run it for
        the next batches, or None: CPU-copy migrators need none
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
