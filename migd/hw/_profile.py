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
entry per side through the IOMMU's IOVA allocator, ~0.03 us a folio on
``zen3-ptdma``: the published 4K 16-channel DMA row, 3.54 GB/s = 1.16 us per folio in
all, of which unmap and remap take ~0.9, leaves no room for more).
Rejected: folding them into ``desc_us``, which would let 16 channels hide CPU
work that one caller's core does serially.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mm import HPAGE_PMD_ORDER, PAGE_SIZE


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

    def _per_page_half(self, orders: np.ndarray) -> np.ndarray:
        pages = np.left_shift(1, orders.astype(np.int64))
        pte = np.where(orders < HPAGE_PMD_ORDER, self.pte_us, 0.0)
        return pages * (pte + self.page_us) / 2

    def unmap_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``migrate_folio_unmap()``."""
        return (self.unmap_folio_us + self._per_page_half(orders)) * 1e-6

    def move_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``migrate_folio_move()`` without the copy."""
        return (self.move_folio_us + self._per_page_half(orders)) * 1e-6

    def copy_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``folio_mc_copy()`` on one CPU."""
        return (PAGE_SIZE * np.left_shift(1, orders.astype(np.int64))) / (self.copy_gbps * 1e9)

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
    #: The engine maps through an IOMMU, whose ``dma_map_sgtable()`` merges
    #: physically contiguous entries up to ``max_seg_bytes``
    #: (``dma_get_max_seg_size()``): source and destination may come back
    #: with different ``nents`` (``dma._sgmap``).  False for ``native``.
    iommu: bool = False
    max_seg_bytes: int = 65536
    #: Channels come from ``dma_find_channel()`` (dmaengine.c): the calling
    #: CPU's channel of the DMA_MEMCPY table, shared by every client, never
    #: claimed (SDXI has no DMA_PRIVATE).  False: ``dma_request_chan_by_mask()``.
    find_channel: bool = False

    def desc_seconds(self, nbytes: int, order: int, sharing: int, active: int) -> float:
        """One descriptor's time on a channel whose engine has ``sharing`` busy
        channels, with ``active`` busy channels on the device."""
        rate = min(self.engine_gbps / max(sharing, 1), self.membus_gbps / max(active, 1))
        pages = 0 if order >= HPAGE_PMD_ORDER else nbytes // PAGE_SIZE
        return (self.desc_us + self.iommu_page_us * pages) * 1e-6 + nbytes / (rate * 1e9)

    def descs_seconds(self, nbytes: np.ndarray, orders: np.ndarray, sharing: int,
                      active: int) -> float:
        """:meth:`desc_seconds` summed over descriptors run back to back at one
        sharing (a chunk of a channel's queue), without a Python loop."""
        rate = min(self.engine_gbps / max(sharing, 1), self.membus_gbps / max(active, 1))
        pages = np.where(orders >= HPAGE_PMD_ORDER, 0, nbytes // PAGE_SIZE)
        per = (self.desc_us + self.iommu_page_us * pages) * 1e-6 + nbytes / (rate * 1e9)
        return float(per.sum())


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    cpu: CpuModel
    dma: DmaModel
    extra: dict = field(default_factory=dict)


#: AMD Zen 3 EPYC (2 sockets), calibrated on shared/calibration.
#:
#: The unmap/move split of the per-folio work is pinned by the published
#: vanilla first-folio table, now that the vanilla path copies in the move loop
#: (unmap the batch, flush once, then copy + remap folio by folio): for n >= 2048
#: 4K folios every batch is a full 512, so the first folio waits 512 unmaps +
#: one flush + one copy + one move = 166-208 us.  ``flush_us`` is pinned at ~20
#: us by the n = 1..16 rows (24-31 us, one folio's worth of everything else), so
#: a 4K unmap is (184 - 20 - 1.3) / 512 ~= 0.32 us: ``unmap_folio_us`` 0.20 plus
#: the per-page halves (0.12).  That is where ``migrate_folio_unmap()`` calls
#: ``get_new_folio()`` (the destination's allocation on the far node, ~0.1 us)
#: besides ``folio_trylock()`` and ``try_to_migrate()``.  The vanilla 4K rate
#: (3.31 GB/s = 1.24 us a folio) fixes unmap + copy + move, so the move gives
#: back most of what the unmap gained (0.55 -> 0.48); the remaining 0.03 is what
#: the 16-channel DMA batch sweep asks for after its first folio (~0.65 us a 4K folio
#: of remap alone).  Rejected: a larger ``flush_us`` (one IPI round per batch;
#: ~60 us would fit n >= 2048 but put the n = 1 row at ~60 us against 24, and
#: the 2M rows, one flush per THP, 20% slow), and a faster ``copy_gbps`` (the 2M
#: vanilla and 1-thread batch-copy rows pin 13 GB/s).
ZEN3_CPU = CpuModel(
    call_us=80.0, flush_us=20.0, unmap_folio_us=0.20, move_folio_us=0.48, pte_us=0.22,
    page_us=0.02, copy_gbps=13.0, mt_dispatch_us=5.0, membus_gbps=72.0,
)
#: 16 PT devices of one memcpy channel each, held exclusively (DMA_PRIVATE) by
#: the batch that requested them.  Pairs of them share an engine's 14 GB/s:
#: the published 2M rows scale 12.65 -> 27.01 GB/s from 1 to 4 channels (2x,
#: not 4x).  A 4K 16-channel DMA batch reaches its first remap after ~0.49 us a folio
#: (batch sweep: 129 ms for 262144 folios, 253 us for 512), of which the unmap
#: above takes 0.32 and the last channel's slice (1/16 of the descriptors at
#: ~1.4 us each) ~0.09: what is left, ~0.08, is the CPU's two
#: ``dma_map_page_attrs()`` (``map_folio_us`` 0.03) and one
#: ``dmaengine_prep_dma_memcpy()`` + ``dmaengine_submit()`` (``submit_us`` 0.06)
#: per folio.
ZEN3_PTDMA = DmaModel(
    nr_channels=16, channels_per_engine=2, engine_gbps=14.0, membus_gbps=100.0, desc_us=0.5,
    iommu_page_us=0.35, submit_us=0.06, exclusive=True, channels_per_device=1,
    chan_request_us=0.5, map_folio_us=0.03, reports_errors=False, iommu=True,
)

PROFILES: dict[str, HardwareProfile] = {
    "native": HardwareProfile(
        "native", "no throttling: DMA channels copy as fast as host threads can", ZEN3_CPU,
        DmaModel(nr_channels=16, channels_per_engine=1, engine_gbps=1e9, membus_gbps=1e9,
                 desc_us=0.0, iommu_page_us=0.0, submit_us=0.0, native=True,
                 memcpy_sg=True, memset=True)),
    "zen3-ptdma": HardwareProfile("zen3-ptdma", "AMD Zen 3 EPYC with PTDMA (16 channels)",
                                  ZEN3_CPU, ZEN3_PTDMA),
    "sdxi": HardwareProfile(
        "sdxi", "one fast SDXI channel with a 512-descriptor ring", ZEN3_CPU,
        DmaModel(nr_channels=1, channels_per_engine=1, engine_gbps=40.0, membus_gbps=80.0,
                 desc_us=0.2, iommu_page_us=0.05, submit_us=0.08, ring_size=512,
                 chan_request_us=0.5, map_folio_us=0.05, mark_chunks=True, iommu=True,
                 find_channel=True)),
    "dsa": HardwareProfile(
        "dsa", "Intel DSA: work queues claimed per batch, -EBUSY when all are taken", ZEN3_CPU,
        DmaModel(nr_channels=8, channels_per_engine=1, engine_gbps=20.0, membus_gbps=80.0,
                 desc_us=0.3, iommu_page_us=0.05, submit_us=0.1, exclusive=True,
                 chan_request_us=0.5, map_folio_us=0.05, memcpy_sg=True, memset=True,
                 iommu=True)),
}


def get_profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown hardware profile {name!r} (expected one of {', '.join(PROFILES)})"
        ) from None
