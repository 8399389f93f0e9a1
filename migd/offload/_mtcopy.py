"""``mtcopy``: multi-threaded CPU copy (Zi Yan's RFC, ``copy_page_lists_mt()``)."""

from __future__ import annotations

import errno

import numpy as np

from ..mm import PAGE_SIZE, folios_copy_mt, folios_set_content_copied, wake_helpers
from ._migrator import CopyBatch, Migrator

MTCOPY_MAX_THREADS = 64


class MtcopyMigrator(Migrator):
    """Copies each batch with ``threads`` real threads.

    Real clock: a compiled copy whose pieces (Zi Yan's split) are claimed by
    the caller and helper OS threads doing real memcpys (``mm._mtpool``).
    Virtual clock: each thread's share runs at one CPU's copy bandwidth, all
    under the memory-bus ceiling, after a per-batch dispatch cost (queue_work
    + wait).
    """

    name = "mtcopy"

    def __init__(self, threads: int = 4) -> None:
        self.threads = 1
        self.set_threads(threads)

    def set_threads(self, threads: int) -> None:
        if not 1 <= threads <= MTCOPY_MAX_THREADS:
            raise OSError(errno.EINVAL, f"threads must be 1..{MTCOPY_MAX_THREADS}")
        self.threads = threads

    @property
    def cpu_threads(self) -> int:
        """Copy threads (the engine's CPU fast path runs CPU-copy migrators inline)."""
        return self.threads

    @property
    def param(self) -> int:
        return self.threads

    async def migrate_offc(self, batch: CopyBatch) -> int:
        mem = batch.memory
        if batch.clock.virtual:
            folios_set_content_copied(mem.mem_map, batch.src)
            mem.copy_folios(batch.dst, batch.src, batch.orders)
            await batch.clock.spend(
                batch.profile.cpu.mt_copy_seconds(thread_bytes(batch.orders, self.threads)))
            return 0
        wake_helpers(self.threads)  # at most CPUs - 1 helpers besides the caller
        folios_copy_mt(mem.arena_base, mem.page_bytes, mem.mem_map, batch.dst, batch.src, 0,
                       batch.nr_folios, self.threads)
        folios_set_content_copied(mem.mem_map, batch.src)
        return 0


def thread_items(nr_items: int, threads: int) -> np.ndarray:
    """Folios per thread under ``copy_page_lists_mt()`` when ``nr_items >=
    threads``: ``nr_items / threads`` each, and the first ``nr_items % threads``
    threads one more (``num_xfer_per_thread + (cpu < nr_items % total_mt_num)``),
    in list order.  Rejected: ``nr*i/T`` cuts, which put the extra folios on
    the later threads and spread them out (10 over 4: 2,3,2,3 against Zi
    Yan's 3,3,2,2)."""
    q, r = divmod(nr_items, threads)
    return q + (np.arange(threads) < r)


def thread_bytes(orders: np.ndarray, threads: int) -> np.ndarray:
    """Bytes each thread copies under ``copy_page_lists_mt()``'s split: fewer
    folios than threads splits every folio into ``threads`` equal chunks, else
    contiguous runs of :func:`thread_items` folios."""
    sizes = PAGE_SIZE * np.left_shift(1, orders.astype(np.int64))
    n = sizes.size
    if n < threads:
        return np.full(threads, sizes.sum() / threads)
    q, r = divmod(n, threads)  # thread i starts at i*q + min(i, r) (thread_items)
    starts = np.array([i * q + min(i, r) for i in range(threads)])
    return np.add.reduceat(sizes, starts).astype(np.float64)  # integers: exact
