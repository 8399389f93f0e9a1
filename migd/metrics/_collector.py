"""Prometheus metrics: a collector that translates the core's snapshots.

No second set of books: at each scrape the collector reads the System's read
snapshot (the engine's ``statistics()`` and the nodes' usage, the one the
tree's node files print; safe from the HTTP thread), the DMA channels', tenants' and
callers' counters, and renders them with Prometheus names (``migd_`` prefix,
``_total`` counters, base units) and low-cardinality labels.  Every counter
comes from a monotonic count in the core, so none goes backwards — a reset of
a migrator's counter in the tree only moves the tree's view.  Each migrator's
declared parameters and counters (its catalogue entry) are exported as
``migd_migrator_param_<name>{migrator}``: a gauge, or a counter for a count.
"""

from __future__ import annotations

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)

from ..migrate import MIGRATOR_ERROR, VMSTAT_ITEMS, HistogramSnapshot
from ..mm import PAGE_SIZE, MigrateMode, MigrateReason
from ..offload import migrator_names, offload_migrators

#: Fallback causes a migrator and the engine can report (always exported, 0 until seen).
CAUSES = ("EIO", "ETIMEDOUT", "EBUSY", "EOPNOTSUPP", "incomplete", MIGRATOR_ERROR)
#: migrate_pages() modes, as the trace prints them.
MODES = tuple(m.value for m in MigrateMode)


def _complete(d: dict, keys) -> dict:
    """Every expected label set, 0 where nothing happened yet (queries see 0, not nothing)."""
    return {k: d.get(k, 0) for k in [*keys, *(k for k in d if k not in keys)]}


def _histogram(name: str, doc: str, h: HistogramSnapshot) -> HistogramMetricFamily:
    buckets, acc = [], 0
    for le, n in zip([*h.bounds, float("inf")], h.counts, strict=True):
        acc += n
        buckets.append(("+Inf" if le == float("inf") else repr(float(le)), acc))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=h.sum)


class MigdCollector:
    def __init__(self, system, version: str) -> None:
        self.sys = system
        self.version = version

    def describe(self):
        return []  # no scrape at registration

    def collect(self):
        sys = self.sys
        snap = sys.reads.snapshot()  # the tree's node files read the same snapshot
        s = snap.stats
        mig = sys.active_migrator()
        info = InfoMetricFamily("migd_migrator", "The active migrator (none: CPU default).")
        info.add_metric([], {"migrator": mig, "profile": sys.profile.name})
        yield info
        build = InfoMetricFamily("migd_build", "migd's version.")
        build.add_metric([], {"version": self.version})
        yield build
        budget = sys.engine.budget_statistics()
        g = GaugeMetricFamily("migd_max_inaccessible_seconds",
                              "The latency budget (max_inaccessible_us); 0: off.")
        g.add_metric([], budget.budget_us * 1e-6)
        yield g
        c = CounterMetricFamily("migd_budget_batches", "Batches run under a latency budget.")
        c.add_metric([], budget.batches)
        yield c
        c = CounterMetricFamily("migd_budget_exceeded_batches",
                                "Batches under a budget whose longest inaccessible time "
                                "exceeded it.")
        c.add_metric([], budget.exceeded)
        yield c
        for item in VMSTAT_ITEMS:  # the kernel's vmstat items, by reason
            unit = "pages" if item.startswith("pg") else "folios"
            c = CounterMetricFamily(f"migd_{item}_{unit}", f"/proc/vmstat {item}, by reason.",
                                    labels=["reason"])
            for reason, row in s.vmstat_by_reason.items():
                c.add_metric([reason], row[item])
            yield c
        migrators = migrator_names()  # the catalogue, read at each scrape
        pairs = [(m, r.label) for m in migrators for r in MigrateReason]
        for name, doc, d in (
                ("migd_migrated_folios", "Folios migrated.", s.folios_migrated),
                ("migd_failed_folios", "Folios that failed to migrate.", s.folios_failed),
                ("migd_migrated_bytes", "Bytes of folios migrated.", s.bytes_migrated),
                ("migd_failed_bytes", "Bytes of folios that failed.", s.bytes_failed)):
            c = CounterMetricFamily(name, doc, labels=["migrator", "reason"])
            for (m, r), v in _complete(d, pairs).items():
                c.add_metric([m, r], v)
            yield c
        for name, doc, label, d, keys in (
                ("migd_batches", "migrate_pages_batch() runs.", "migrator", s.batches,
                 migrators),
                ("migd_offload_fallback_folios",
                 "Folios an offload migrator left to the CPU, by cause.", "cause", s.fallbacks,
                 CAUSES),
                ("migd_copy_cpu_seconds", "CPU time spent copying folios.", "migrator",
                 s.cpu_copy_seconds, migrators),
                ("migd_migrator_errors",
                 "Exceptions raised by a migrator's copy (its batch fell back to the CPU).",
                 "migrator", s.migrator_errors, migrators),
                ("migd_migrate_pages_calls", "migrate_pages() calls, by mode.", "mode",
                 s.calls, MODES)):
            c = CounterMetricFamily(name, doc, labels=[label])
            for k, v in _complete(d, keys).items():
                c.add_metric([k], v)
            yield c
        yield _histogram("migd_batch_pages", "Base pages per batch.", s.batch_pages)
        yield _histogram("migd_first_folio_latency_seconds",
                         "Batch entry to the first folio remapped.", s.first_folio_seconds)
        yield _histogram("migd_inaccessible_seconds",
                         "Per folio: unmapped (migration entry) to remapped.",
                         s.inaccessible_seconds)
        yield from self._migrator_params()
        yield from self._dma()
        yield from self._nodes(snap.nodes)
        yield from self._tenants()
        yield from self._clears()
        c = CounterMetricFamily("migd_faults_injected", "Injected faults, by fault point.",
                                labels=["point"])
        for point, v in sys.faults.injected().items():
            c.add_metric([point], v)
        yield c

    def _clears(self):
        """Faults that got a zeroed folio, by how (``pool``: a parked folio,
        ``dma``: the clearing offload, ``cpu``: ``folio_zero_user()``), the CPU
        they spent clearing, and the prezero pool per node."""
        sys = self.sys
        c = CounterMetricFamily("migd_offload_clear_faults", "Faults that mapped a zeroed "
                                "folio, by how it was zeroed.", labels=["how"])
        for how, n in sys.faults_by_how.items():
            c.add_metric([how], n)
        yield c
        c = CounterMetricFamily("migd_offload_clear_cpu_seconds",
                                "CPU time faults spent clearing (modelled).")
        c.add_metric([], sys.fault_cpu_seconds)
        yield c
        pool = sys.prezero
        g = GaugeMetricFamily("migd_prezero_pool_folios", "Pre-zeroed PMD folios parked.",
                              labels=["node"])
        hits = CounterMetricFamily("migd_prezero_pool_hits", "THP faults served a parked "
                                   "folio.", labels=["node"])
        misses = CounterMetricFamily("migd_prezero_pool_misses", "THP faults that found no "
                                     "parked folio.", labels=["node"])
        for nid in range(len(pool.parked)):
            g.add_metric([str(nid)], pool.node_size(nid))
            hits.add_metric([str(nid)], int(pool.hits[nid]))
            misses.add_metric([str(nid)], int(pool.misses[nid]))
        yield from (g, hits, misses)

    def _migrator_params(self):
        """What each migrator declares, by parameter name, one sample per migrator."""
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for e in offload_migrators():
            m = self.sys.migrators.get(e.name)
            for p in e.params if m is not None else ():
                value = p.value(m)
                if isinstance(value, str):  # a name (a variant): an info gauge
                    fam = fams.get(p.name) or fams.setdefault(p.name, GaugeMetricFamily(
                        f"migd_migrator_param_{p.name}_info",
                        f"Migrator parameter {p.name}: {p.help}.",
                        labels=["migrator", p.name]))
                    fam.add_metric([e.name, value], 1)
                    continue
                fam = fams.get(p.name)
                if fam is None:
                    cls = CounterMetricFamily if p.counter else GaugeMetricFamily
                    fam = fams[p.name] = cls(f"migd_migrator_param_{p.name}",
                                             f"Migrator parameter {p.name}: {p.help}.",
                                             labels=["migrator"])
                fam.add_metric([e.name], value)
        yield from fams.values()

    def _dma(self):
        dev = self.sys.dma
        fams = {
            "busy": CounterMetricFamily("migd_dma_channel_busy_seconds",
                                        "Time a DMA channel spent on descriptors.",
                                        labels=["device", "channel"]),
            "bytes": CounterMetricFamily("migd_dma_channel_transferred_bytes",
                                         "Bytes a DMA channel copied.",
                                         labels=["device", "channel"]),
            "desc": CounterMetricFamily("migd_dma_channel_descriptors",
                                        "Memcpy descriptors a DMA channel completed.",
                                        labels=["device", "channel"]),
        }
        for ch in dev.channels:
            labels = [ch.device_name, str(ch.index)]
            fams["busy"].add_metric(labels, ch.busy_seconds)
            fams["bytes"].add_metric(labels, ch.bytes_transferred)
            fams["desc"].add_metric(labels, ch.memcpy_count)
        yield from fams.values()
        c = CounterMetricFamily("migd_dma_batches_refused", "Batches refused (-EBUSY).",
                                labels=["device"])
        c.add_metric([f"dma{dev.dev_id}"], dev.batches_refused)
        yield c
        c = CounterMetricFamily(
            "migd_dma_unreported_errors",
            "Descriptors that failed or completed short on an engine that reports no "
            "descriptor errors: their folios were remapped uncopied.", labels=["device"])
        c.add_metric([f"dma{dev.dev_id}"], dev.unreported_errors)
        yield c

    def _nodes(self, nodes):
        cap = GaugeMetricFamily("migd_node_capacity_bytes", "Node memory.", labels=["node"])
        used = GaugeMetricFamily("migd_node_used_bytes", "Node memory in use.", labels=["node"])
        for n in nodes:
            cap.add_metric([str(n.nid)], n.nr_pages * PAGE_SIZE)
            used.add_metric([str(n.nid)], (n.nr_pages - n.free) * PAGE_SIZE)
        yield cap
        yield used
        for item in nodes[0].vmstat:
            unit = "pages" if item.startswith("pg") else "folios"
            if item in ("compact_stall", "compact_fail", "compact_success",
                        "compact_daemon_wake"):
                unit = "runs"
            c = CounterMetricFamily(f"migd_{item}_{unit}", f"Node vmstat {item}.",
                                    labels=["node"])
            for n in nodes:
                c.add_metric([str(n.nid)], n.vmstat[item])
            yield c

    def _tenants(self):
        secs = CounterMetricFamily("migd_tenant_stall_seconds",
                                   "Time a tenant waited on migration entries.",
                                   labels=["tenant"])
        stalls = CounterMetricFamily("migd_tenant_stalls",
                                     "Accesses that met a migration entry.", labels=["tenant"])
        for t in self.sys.tenants:
            st = t.statistics()
            secs.add_metric([t.name], st.stall_seconds)
            stalls.add_metric([t.name], st.stalls)
        yield secs
        yield stalls
        yield from self._cgroups()

    def _cgroups(self):
        """The tenants' cgroups (``fs/cgroup/<tenant>/memory.stat``'s figures):
        DMA channel and CPU copy time charged to each tenant's folios, by
        migrator, and its tiering events."""
        sys = self.sys
        if not hasattr(sys, "memcg"):
            return
        dma = CounterMetricFamily("migd_cgroup_dma_busy_seconds", "DMA channel time charged "
                                  "to the tenant's folios, by migrator.",
                                  labels=["tenant", "migrator"])
        cpu = CounterMetricFamily("migd_cgroup_copy_cpu_seconds", "CPU copy time spent on "
                                  "the tenant's folios, by migrator.",
                                  labels=["tenant", "migrator"])
        ev = CounterMetricFamily("migd_cgroup_events", "memory.stat tiering events "
                                 "(base pages), by item.", labels=["tenant", "item"])
        by_owner = sys.engine.statistics().cpu_copy_seconds_by_owner
        for t in sys.tenants:
            for name in sys.dma_migrators():
                dma.add_metric([t.name, name], sys.dma.busy_by_owner(t.tid))
            for who in sys.migrator_labels():
                cpu.add_metric([t.name, who], by_owner.get((who, t.tid), 0.0))
            for item, counts in sys.memcg.events.items():
                ev.add_metric([t.name, item], int(counts[t.tid]))
        yield dma
        yield cpu
        yield ev
