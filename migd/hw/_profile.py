"""Hardware profiles: the cost model of the CPU migration path (and, later, DMA).

The model is a mechanism, not a table: a handful of per-folio, per-page,
per-batch and bandwidth parameters from which every experiment's time follows.
On the virtual clock the engine charges these costs; on the real clock they are
not used for the CPU path (the real copy costs what it costs).

Costs of the CPU path (``mm/migrate.c``):

* ``flush_us`` per batch: ``try_to_unmap_flush()``, one TLB shootdown.
* ``unmap_folio_us`` / ``move_folio_us`` per folio: lock, allocate and
  ``try_to_migrate()``; then ``migrate_folio_move()``'s bookkeeping, remap and
  freeing of the source.
* ``pte_us`` per base page of a PTE-mapped folio (every order below PMD): one
  PTE to unmap and one to remap, half charged in each phase.  A PMD-mapped THP
  has a single entry, which is why 2 MiB folios migrate much faster per byte.
* ``copy_gbps``: bandwidth of ``folio_mc_copy()`` on one CPU.
* ``call_us`` per ``move_pages()`` call: syscall entry, LRU drain, isolation.
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
    copy_gbps: float

    def _pte_half(self, orders: np.ndarray) -> np.ndarray:
        pages = np.left_shift(1, orders.astype(np.int64))
        return np.where(orders < HPAGE_PMD_ORDER, pages * (self.pte_us / 2), 0.0)

    def unmap_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``migrate_folio_unmap()``."""
        return (self.unmap_folio_us + self._pte_half(orders)) * 1e-6

    def move_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``migrate_folio_move()`` without the copy."""
        return (self.move_folio_us + self._pte_half(orders)) * 1e-6

    def copy_seconds(self, orders: np.ndarray) -> np.ndarray:
        """Per folio: ``folio_mc_copy()`` on one CPU."""
        return (PAGE_SIZE * np.left_shift(1, orders.astype(np.int64))) / (self.copy_gbps * 1e9)


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    cpu: CpuModel
    extra: dict = field(default_factory=dict)


#: Calibrated on shared/calibration (AMD Zen 3 EPYC); see docs in the bench.
ZEN3_CPU = CpuModel(
    call_us=80.0,
    flush_us=20.0,
    unmap_folio_us=0.10,
    move_folio_us=0.60,
    pte_us=0.25,
    copy_gbps=12.7,
)

PROFILES: dict[str, HardwareProfile] = {
    "native": HardwareProfile("native", "no throttling: copies run at host speed", ZEN3_CPU),
    "zen3-ptdma": HardwareProfile("zen3-ptdma", "AMD Zen 3 EPYC with PTDMA", ZEN3_CPU),
}


def get_profile(name: str) -> HardwareProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown hardware profile {name!r} (expected one of {', '.join(PROFILES)})"
        ) from None
