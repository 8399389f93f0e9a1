"""Hardware profiles: cost models of the CPU migration path and of DMA devices.

A model is a mechanism, not a table: a handful of per-folio, per-page,
per-batch, per-descriptor and bandwidth parameters from which every
experiment's time follows.  The virtual clock charges these costs; on the real
clock the CPU path costs what it costs, and DMA profiles other than ``native``
hold each descriptor until its modelled completion.

CPU path (``mm/migrate.c``), per folio of ``p`` base pages:

* unmap: ``unmap_folio_us`` + ``page_us * p / 2`` (struct-page work of the new
  folio) + ``pte_us * p / 2`` for a PTE-mapped folio (one PTE each; a
  PMD-mapped THP has a single entry);
* move: ``move_folio_us`` and the other halves of the per-page terms;
* copy: bytes / ``copy_gbps`` (``folio_mc_copy()`` on one CPU);
* per batch ``flush_us`` (``try_to_unmap_flush()``), per ``move_pages()`` call
  ``call_us``; multi-threaded copy adds ``mt_dispatch_us`` per batch and runs
  each thread at ``copy_gbps`` under the shared ``membus_gbps`` ceiling.

DMA (``DmaModel``): a device's channels sit on engines (``channels_per_engine``
share one engine's ``engine_gbps``); all engines share the memory bus.  One
descriptor costs ``desc_us`` on its channel, plus ``iommu_page_us`` per 4 KiB
page unless the folio is a PMD-mapped THP (one 2 MiB IOMMU mapping), plus its
bytes at the channel's share of bandwidth.  Preparing and submitting it costs
the CPU ``submit_us``.

Per batch, RFC v6's DMA migrator also spends CPU outside the channels, and it is charged
to the CPU, not hidden in channel time: ``chan_request_us`` per channel for
``dma_request_chan_by_mask()`` and ``dma_release_channel()`` (a walk of the
dmaengine device list under ``dma_list_mutex`` and the channel's
client-count/module reference; ~0.5 us on a 3 GHz core, a few hundred cycles
of locking and list walking each way), and ``map_folio_us`` per folio for the
two ``dma_map_sgtable()`` calls of ``setup_sg_tables()`` (one scatterlist
entry per side through the IOMMU's IOVA allocator; a few hundredths of a us
at most on ``zen3-ptdma``: the published 4K 16-channel DMA row, 3.54 GB/s =
1.16 us per folio in all, of which unmap and remap take ~0.9, leaves no room
for more, and the fit finds it flat).
Rejected: folding them into ``desc_us``, which would let 16 channels hide CPU
work that one caller's core does serially.

Mechanisms ``migd profile fit`` found in the published tables' shape (each 0,
i.e. off, unless a profile sets it): ``cold_folio_us``, paid in unmap and in
move by the first ``cold_folios`` folios of a call (caches cold after
``do_pages_move()``'s set-up: 264 us to the first folio of a call of 512 4K
folios, 208 for 2048 - half its batches cold - and 166 for 65536); ``iommu_run_pages`` /
``iommu_tail_us``, a folio's pages past its first ``iommu_run_pages``
translated with the IOMMU's walk caches warm; ``iommu_walk_us``, the walks of
those first pages queued on the IOMMU's one walker, shared by every busy
channel (small folios stop scaling with channels); ``chan_gbps``, a channel's
own ceiling under its engine's; ``call_mib_us`` per MiB of the first
``call_cap_mib`` MiB a ``move_pages()`` call moved, charged when its
``migrate_pages()`` returns.  The last is a capacity, not a kernel loop: the
published vanilla calls lose the same time at the same bytes per call whatever
the folio size (16 MiB: 384 us in a call of 8 2M folios, 337 in one of 4096
4K folios),
growing with the call until the fit's ``call_cap_mib`` (69 MiB; loosely
pinned - the fit reports it as a trade-off with ``page_us``, and other loss
choices put it at 62-128 MiB, the L3 of two to four 32 MiB Zen 3 CCDs; the
RFC does not name its part), while the first folio of those calls
stays flat (186-194 us for 2M), so it is per byte, saturates, and is not in
the first folio's span.  A bounded store of the call's bytes fits that - the
moved data's dirty lines leaving the caches - and no step of
``do_pages_move()`` does: ``lru_cache_disable()`` (``synchronize_rcu_expedited()``
and ``__lru_add_drain_all()``) is once a call (``call_us``), ``folio_add_lru()``
straight to the LRU while it is disabled is per folio (4K and 2M calls would
differ 512-fold), the status copy-out is 4 bytes a page.  Where in the call
the time goes is not measured; it is charged at its end.  Rejected: source
data left in the LLC making calls under its size copy faster (the published
calls of 1..8 2M folios take 220-238 us a folio, 16-25% more than the 1 GiB
call's 190; given a copy rate of its own for calls whose source and
destination fit in 16, 32 or 64 MiB, the fit put it within 4% of
``copy_gbps`` and left the call of 16 2M folios where it was: +23-24% under
the Cauchy loss alone, 18.3-18.4% under the fit's wall); charging it in the
copy (2M calls of 1..16 folios would show it in their first folio, +25%);
per folio.  Rejected for all of these: a correction per folio size or
channel count, which would fit the calibration cells and predict nothing
else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..mm import HPAGE_PMD_ORDER, MAX_FOLIO_ORDER, PAGE_SIZE


@dataclass(frozen=True)
class CpuModel:
    call_us: float
    flush_us: float
    unmap_folio_us: float
    move_folio_us: float
    pte_us: float
    page_us: float
    copy_gbps: float
    mt_dispatch_us: float
    membus_gbps: float
    #: Per folio among the first ``cold_folios`` of a call, in its unmap and
    #: again in its move (caches cold after the call's set-up).
    cold_folio_us: float = 0.0
    cold_folios: int = 512
    #: Per MiB of the first ``call_cap_mib`` a ``move_pages()`` call moved,
    #: when its ``migrate_pages()`` returns (after every batch of the call).
    call_mib_us: float = 0.0
    call_cap_mib: int = 64

    def call_end_seconds(self, nbytes: int) -> float:
        """The call's end: ``call_mib_us`` per MiB of its first
        ``call_cap_mib`` MiB moved (see the module docstring)."""
        return self.call_mib_us * min(nbytes / (1 << 20), self.call_cap_mib) * 1e-6

    # Per-folio costs depend on the order alone (and the cold surcharge on
    # the place in the call): each is a table of the same expression over
    # every order, looked up per folio - one numpy call instead of six, for
    # the same floats (elementwise arithmetic does not depend on its
    # neighbours).  Computed at first use; a new model (``replace``) has its own.

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unmap, move, copy) in us, us and s, by order: the cold surcharge
        and the 1e-6 are applied by the callers."""
        orders = np.arange(MAX_FOLIO_ORDER + 1)
        pages = np.left_shift(1, orders.astype(np.int64))
        pte = np.where(orders < HPAGE_PMD_ORDER, self.pte_us, 0.0)
        half = pages * (pte + self.page_us) / 2
        copy = (PAGE_SIZE * pages) / (self.copy_gbps * 1e9)
        return self.unmap_folio_us + half, self.move_folio_us + half, copy

    @cached_property
    def _warm_seconds(self) -> tuple[np.ndarray, np.ndarray]:
        """Unmap and move in seconds by order, with no cold surcharge."""
        unmap, move, _ = self._tables
        return unmap * 1e-6, move * 1e-6

    def _cold(self, n: int, pos: int | None) -> np.ndarray | None:
        """The cold surcharge of ``n`` folios from position ``pos`` of their
        call on (None: not a call's; returns None when none pays it): the
        first ``cold_folios`` of a call pay ``cold_folio_us``."""
        if pos is None or not self.cold_folio_us or pos >= self.cold_folios:
            return None
        return np.where(np.arange(pos, pos + n) < self.cold_folios, self.cold_folio_us, 0.0)

    def unmap_seconds(self, orders: np.ndarray, pos: int | None = None) -> np.ndarray:
        """Per folio: ``migrate_folio_unmap()`` (``pos``: the first's place in its call)."""
        cold = self._cold(orders.size, pos)
        if cold is None:
            return self._warm_seconds[0][orders]
        return (self._tables[0][orders] + cold) * 1e-6

    def move_seconds(self, orders: np.ndarray, pos: int | None = None) -> np.ndarray:
        """Per folio: ``migrate_folio_move()`` without the copy."""
        cold = self._cold(orders.size, pos)
        if cold is None:
            return self._warm_seconds[1][orders]
        return (self._tables[1][orders] + cold) * 1e-6

    def copy_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``folio_mc_copy()`` on one CPU."""
        return self._tables[2][orders]

    def mt_copy_seconds(self, nbytes_per_thread: np.ndarray) -> float:
        """A multi-threaded copy: threads run in parallel under the bus ceiling."""
        threads = nbytes_per_thread.size
        rate = min(self.copy_gbps, self.membus_gbps / max(threads, 1)) * 1e9
        return self.mt_dispatch_us * 1e-6 + float(nbytes_per_thread.max()) / rate


@dataclass(frozen=True)
class DmaModel:
    nr_channels: int
    channels_per_engine: int
    engine_gbps: float
    membus_gbps: float
    desc_us: float
    iommu_page_us: float
    submit_us: float
    #: Descriptors a channel's ring holds; larger submissions wait for room.
    ring_size: int = 0
    #: Channels are claimed per batch; when all are busy: -EBUSY (DSA work queues).
    exclusive: bool = False
    #: No throttling at all: channels copy as fast as host threads can.
    native: bool = False
    #: Channels per DMA device (0: all on one device).  PTDMA: one memcpy
    #: channel per PT device, named ``dma<N>chan0``.
    channels_per_device: int = 0
    #: CPU per channel claimed: request + release (see the module docstring).
    chan_request_us: float = 0.0
    #: CPU per folio: ``dma_map_sgtable()`` of source and destination.
    map_folio_us: float = 0.0
    #: The DMA migrator's ring-chunked variant: folios are marked copied chunk by chunk
    #: (a ring's worth) as each completes, so an error keeps the finished
    #: chunks.  Only the ``sdxi`` profile; v6 marks all or nothing.
    mark_chunks: bool = False
    #: dmaengine capabilities beyond DMA_MEMCPY, read by the newest dcbm:
    #: DMA_MEMCPY_SG (scatter-gather transactions, one submission for many
    #: folios: DSA's batch descriptor) and DMA_MEMSET (clearing offload).
    memcpy_sg: bool = False
    memset: bool = False
    #: The driver hands each descriptor's callback a result (status, residue).
    #: False for PTDMA: ``pt_handle_active_desc()`` calls
    #: ``dmaengine_desc_get_callback_invoke(tx_desc, NULL)``, which
    #: ``dmaengine_desc_callback_invoke()`` turns into DMA_TRANS_NOERROR, so a
    #: failed descriptor looks copied to its client.
    reports_errors: bool = True
    #: The engine maps through an IOMMU, whose ``dma_map_sgtable()``
    #: (``iommu_dma_map_sg()``) concatenates entries in IOVA space up to
    #: ``max_seg_bytes`` (``dma_get_max_seg_size()``), by length alone: a
    #: batch's two sides come back with the same ``nents`` (``dma._sgmap``).
    #: False for ``native`` (``dma_direct_map_sg()``: no merging).
    iommu: bool = False
    max_seg_bytes: int = 65536
    #: Channels come from ``dma_find_channel()`` (dmaengine.c): the calling
    #: CPU's channel of the DMA_MEMCPY table, shared by every client, never
    #: claimed (SDXI has no DMA_PRIVATE).  False: ``dma_request_chan_by_mask()``.
    find_channel: bool = False
    #: The IOMMU's table walker, shared by every busy channel of the device:
    #: each 4 KiB page below PMD size waits this long per other busy channel.
    iommu_walk_us: float = 0.0
    #: Per 4 KiB page past the first ``iommu_run_pages`` of a folio (0: as the first).
    iommu_tail_us: float = 0.0
    iommu_run_pages: int = 0
    #: One channel's own bandwidth ceiling, GB/s (0: none beyond its engine's).
    chan_gbps: float = 0.0

    def fixed_us(self, pages):
        """A descriptor's fixed time on its channel, in us, for ``pages``
        4 KiB pages of IOMMU mapping (0 for a PMD-mapped THP): setup plus the
        IOMMU's per-page cost, the pages past ``iommu_run_pages`` at
        ``iommu_tail_us``.  Works on numbers and arrays alike."""
        if not self.iommu_run_pages:
            return self.desc_us + self.iommu_page_us * pages
        run = np.minimum(pages, self.iommu_run_pages)
        return self.desc_us + self.iommu_page_us * run + self.iommu_tail_us * (pages - run)

    @cached_property
    def per_order(self) -> tuple[np.ndarray, np.ndarray]:
        """``fixed_us`` and ``walked_pages`` of one folio of each order (a
        PMD-mapped THP maps no 4 KiB page), as float arrays: what
        ``dma_schedule`` looks up per descriptor; made once per model."""
        orders = np.arange(MAX_FOLIO_ORDER + 1)
        mapped = np.where(orders >= HPAGE_PMD_ORDER, 0, np.left_shift(1, orders))
        return (np.asarray(self.fixed_us(mapped), dtype=np.float64),
                np.asarray(self.walked_pages(mapped), dtype=np.float64))

    def rate_gbps(self, sharing: int, active: int) -> float:
        """A busy channel's bandwidth: its own ceiling, its engine's share among
        ``sharing`` busy channels, the bus's among ``active``."""
        rate = min(self.engine_gbps / max(sharing, 1), self.membus_gbps / max(active, 1))
        return min(rate, self.chan_gbps) if self.chan_gbps else rate

    def walked_pages(self, pages):
        """Pages of a descriptor that need the IOMMU's walker: the first
        ``iommu_run_pages`` (the tail's walks hit the warm caches)."""
        return np.minimum(pages, self.iommu_run_pages) if self.iommu_run_pages else pages

    def walk_wait(self, active: int) -> float:
        """Seconds per mapped page a descriptor waits for the shared IOMMU
        walker while ``active`` channels of the device are busy."""
        return self.iommu_walk_us * max(active - 1, 0) * 1e-6

    def desc_seconds(self, nbytes: int, order: int, sharing: int, active: int) -> float:
        """One descriptor's time on a channel whose engine has ``sharing`` busy
        channels, with ``active`` busy channels on the device."""
        rate = self.rate_gbps(sharing, active)
        pages = 0 if order >= HPAGE_PMD_ORDER else nbytes // PAGE_SIZE
        return (self.fixed_us(pages) * 1e-6 + self.walk_wait(active) * self.walked_pages(pages)
                + nbytes / (rate * 1e9))

    def descs_seconds(self, nbytes: np.ndarray, orders: np.ndarray, sharing: int,
                      active: int) -> float:
        """:meth:`desc_seconds` summed over descriptors run back to back at one
        sharing (a chunk of a channel's queue), without a Python loop."""
        rate = self.rate_gbps(sharing, active)
        pages = np.where(orders >= HPAGE_PMD_ORDER, 0, nbytes // PAGE_SIZE)
        per = (self.fixed_us(pages) * 1e-6 + self.walk_wait(active) * self.walked_pages(pages)
               + nbytes / (rate * 1e9))
        return float(per.sum())


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    cpu: CpuModel
    dma: DmaModel
    extra: dict = field(default_factory=dict)
