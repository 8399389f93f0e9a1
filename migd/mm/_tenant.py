"""Tenants: emulated processes, each an address space of virtual pages.

A tenant's page table is two arrays over its virtual pages: the pfn each maps
and whether that PTE currently holds a *migration entry* (the folio is being
migrated; ``pfn`` then still names the source page, as the swap-format entry
made by ``make_migration_entry()`` does).  ``version`` is bumped by every write
and, with the tenant id and vpage, determines the page's expected content.
The arrays are views of the machine-wide page table at ``vbase``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TenantSpec:
    """Configuration of one tenant."""

    name: str
    size_bytes: int
    order: int = 0
    home_node: int = 0
    #: Accesses per second by the tenant's mutator (0: no mutator).
    access_rate: float = 0.0
    #: Fraction of accesses that write (bump the page version).
    write_fraction: float = 0.25
    mlocked: bool = False
    #: Folios are non-LRU movable_ops pages: migratable, never batch-copied.
    movable_ops: bool = False


@dataclass(frozen=True)
class TenantStatistics:
    reads: int
    writes: int
    stalls: int
    stall_seconds: float
    max_stall_seconds: float
    corrupt_reads: int


@dataclass
class _Counters:
    reads: int = 0
    writes: int = 0
    stalls: int = 0
    stall_seconds: float = 0.0
    max_stall_seconds: float = 0.0
    corrupt_reads: int = 0
    corrupt_vpages: list[int] = field(default_factory=list)


class Tenant:
    """One address space; see the module docstring."""

    def __init__(self, tid: int, spec: TenantSpec, vbase: int, pte_pfn: np.ndarray,
                 migration_entry: np.ndarray, version: np.ndarray,
                 accessed: np.ndarray) -> None:
        self.tid = tid
        self.spec = spec
        self.name = spec.name
        self.vbase = vbase
        self.nr_pages = pte_pfn.size
        self.pte_pfn = pte_pfn
        self.migration_entry = migration_entry
        self.version = version
        self.accessed = accessed
        self._counters = _Counters()

    def statistics(self) -> TenantStatistics:
        c = self._counters
        return TenantStatistics(c.reads, c.writes, c.stalls, c.stall_seconds,
                                c.max_stall_seconds, c.corrupt_reads)

    def metadata_bytes(self) -> int:
        return (self.pte_pfn.nbytes + self.migration_entry.nbytes + self.version.nbytes
                + self.accessed.nbytes)
