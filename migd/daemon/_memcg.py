"""Tenants as memory cgroups: ``fs/cgroup/<tenant>/memory.stat``.

Each tenant is a cgroup v2 leaf (``/sys/fs/cgroup/<tenant>/``) and its folios
are charged to it (``folio_memcg()``: migd's ``mapping``, the owning tenant).
``memory.stat`` prints, as ``memory_stat_format()`` (mm/memcontrol.c) does,
``memory_stats[]`` in the kernel's order (bytes for sizes, counts for the
events) for the items migd has - ``anon``, ``anon_thp``, ``unevictable`` and
the tiering events ``pgdemote_kswapd``, ``pgdemote_direct``,
``pgdemote_khugepaged``, ``pgdemote_proactive``, ``pgpromote_success`` - then,
clearly named as migd's own, what the RFC asks cgroups to account: the DMA
channel time and the CPU copy time spent on the tenant's folios, by migrator
(``migrate_dma_busy_usec_<migrator>``, ``migrate_copy_cpu_usec_<migrator>``,
microseconds as ``cpu.stat`` counts time).

Charging (whom a mixed batch's DMA time goes to): each descriptor is one
folio, so channel time is charged to the cgroups of the folios the channel
copied, split by their bytes (``DmaDevice.charge``: every busy second the
channels count is charged to someone, so the tenants' lines add up to the
channels' ``busy_seconds``).  The CPU copy time of a batch is split the
same way over the folios the CPU copied (``EngineBooks.add_cpu_seconds``).
Nothing is charged to the caller (kswapd, kcompactd have no cgroup) and
the per-batch CPU of a DMA migrator (channel requests, mapping) is not copy
time.  Rejected: charging a batch to its
first folio's cgroup (a tenant sharing a batch with a large one would pay
for it), and to the calling task's cgroup (the kernel threads that migrate
for everyone).
"""

from __future__ import annotations

import numpy as np

from ..mm import PAGE_SIZE

#: The tiering events of ``memory_stats[]``, in its order.
EVENTS = ("pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged", "pgdemote_proactive",
          "pgpromote_success")


class MemcgStats:
    """Per-tenant event counters the callers keep (``count_memcg_events()``)."""

    def __init__(self, machine, nr_tenants: int) -> None:
        self.machine = machine
        self.events = {e: np.zeros(nr_tenants, dtype=np.int64) for e in EVENTS}

    def owners(self, folios: np.ndarray) -> np.ndarray:
        """Each folio's cgroup (its tenant), read before the folios move."""
        return self.machine.memory.mem_map["mapping"][folios].astype(np.int64)

    def count_moved(self, event: str, folios: np.ndarray, owners: np.ndarray,
                    failed: np.ndarray) -> None:
        """Add the base pages of ``folios`` that migrated (not in ``failed``)
        to their owners' ``event``."""
        ok = ~np.isin(folios, failed) & (owners >= 0)
        if not ok.any():
            return
        pages = self.machine.memory.folio_nr_pages(folios[ok])
        counts = self.events[event]
        counts += np.bincount(owners[ok], weights=pages, minlength=counts.size
                              )[:counts.size].astype(np.int64)


def memory_stat(sys, tenant) -> str:
    """``memory.stat`` of ``tenant``'s cgroup."""
    anon, thp, mlocked = (n * PAGE_SIZE for n in sys.reads.tenant_usage(tenant))
    lines = [("anon", anon), ("file", 0), ("anon_thp", thp), ("unevictable", mlocked)]
    lines += [(e, int(sys.memcg.events[e][tenant.tid])) for e in EVENTS]
    for who, sec in sorted(tenant_dma_seconds(sys, tenant.tid).items()):
        lines.append((f"migrate_dma_busy_usec_{who}", int(sec * 1e6)))
    for who, sec in sorted(tenant_cpu_seconds(sys, tenant.tid).items()):
        lines.append((f"migrate_copy_cpu_usec_{who}", int(sec * 1e6)))
    return "\n".join(f"{k} {v}" for k, v in lines)


def tenant_dma_seconds(sys, tid: int) -> dict[str, float]:
    """DMA channel seconds charged to tenant ``tid``, by migrator: the device's
    descriptors are the DMA migrator's (the catalogue's ``dma`` entries; one
    migrator is active at a time, so the device's time is shown under each)."""
    busy = float(sys.dma.busy_by_owner(tid))
    return {name: busy for name in sys.dma_migrators()}


def tenant_cpu_seconds(sys, tid: int) -> dict[str, float]:
    """CPU copy seconds spent on tenant ``tid``'s folios, by migrator (``none``:
    the move loop's ``folio_mc_copy()`` and the core batch copy)."""
    by = sys.engine.statistics().cpu_copy_seconds_by_owner
    out = {who: 0.0 for who in sys.migrator_labels()}
    for (who, owner), sec in by.items():
        if owner == tid:
            out[who] = out.get(who, 0.0) + sec
    return out
