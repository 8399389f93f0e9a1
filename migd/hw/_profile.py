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

    def desc_seconds(self, nbytes: int, order: int, sharing: int, active: int) -> float:
        """One descriptor's time on a channel whose engine has ``sharing`` busy
        channels, with ``active`` busy channels on the device."""
        rate = min(self.engine_gbps / max(sharing, 1), self.membus_gbps / max(active, 1))
        pages = 0 if order >= HPAGE_PMD_ORDER else nbytes // PAGE_SIZE
        return (self.desc_us + self.iommu_page_us * pages) * 1e-6 + nbytes / (rate * 1e9)


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    cpu: CpuModel
    dma: DmaModel
    extra: dict = field(default_factory=dict)


#: AMD Zen 3 EPYC (2 sockets), calibrated on shared/calibration.
ZEN3_CPU = CpuModel(
    call_us=80.0, flush_us=20.0, unmap_folio_us=0.10, move_folio_us=0.55, pte_us=0.22,
    page_us=0.02, copy_gbps=13.0, mt_dispatch_us=5.0, membus_gbps=72.0,
)
ZEN3_PTDMA = DmaModel(
    nr_channels=16, channels_per_engine=2, engine_gbps=14.0, membus_gbps=100.0, desc_us=0.5,
    iommu_page_us=0.35, submit_us=0.12,
)

PROFILES: dict[str, HardwareProfile] = {
    "native": HardwareProfile(
        "native", "no throttling: DMA channels copy as fast as host threads can", ZEN3_CPU,
        DmaModel(nr_channels=16, channels_per_engine=1, engine_gbps=1e9, membus_gbps=1e9,
                 desc_us=0.0, iommu_page_us=0.0, submit_us=0.0, native=True)),
    "zen3-ptdma": HardwareProfile("zen3-ptdma", "AMD Zen 3 EPYC with PTDMA (16 channels)",
                                  ZEN3_CPU, ZEN3_PTDMA),
    "sdxi": HardwareProfile(
        "sdxi", "one fast SDXI channel with a 512-descriptor ring", ZEN3_CPU,
        DmaModel(nr_channels=1, channels_per_engine=1, engine_gbps=40.0, membus_gbps=80.0,
                 desc_us=0.2, iommu_page_us=0.05, submit_us=0.08, ring_size=512)),
    "dsa": HardwareProfile(
        "dsa", "Intel DSA: work queues claimed per batch, -EBUSY when all are taken", ZEN3_CPU,
        DmaModel(nr_channels=8, channels_per_engine=1, engine_gbps=20.0, membus_gbps=80.0,
                 desc_us=0.3, iommu_page_us=0.05, submit_us=0.1, exclusive=True)),
}


def get_profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown hardware profile {name!r} (expected one of {', '.join(PROFILES)})"
        ) from None
