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
``families()`` gives them as ``Family`` records (label values and values) for
the scrape's encoder; ``collect()``, prometheus-client's collector interface,
turns each into the library's family.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import accumulate

from ..migrate import MIGRATOR_ERROR, VMSTAT_ITEMS, HistogramSnapshot
from ..mm import PAGE_SIZE, MigrateMode, MigrateReason
from ..offload import migrator_names, offload_migrators
from ._family import Counter, Family, Gauge, Histogram, Info

#: Fallback causes a migrator and the engine can report (always exported, 0 until seen).
CAUSES = ("EIO", "ETIMEDOUT", "EBUSY", "EOPNOTSUPP", "incomplete", MIGRATOR_ERROR)
#: migrate_pages() modes, as the trace prints them.
MODES = tuple(m.value for m in MigrateMode)
INF = float("inf")


def _complete(cls: type[Family], name: str, doc: str, labels: tuple, d: dict,
              keys: tuple) -> Family:
    """Every expected label set, 0 where nothing happened yet (queries see 0, not
    nothing); ``keys`` and ``d``'s keys are label-value tuples."""
    full = dict.fromkeys(keys, 0)
    full.update(d)
    return cls(name, doc, labels, list(full), list(full.values()))


def _histogram(name: str, doc: str, h: HistogramSnapshot) -> Histogram:
    return Histogram(name, doc, _le(h.bounds), list(accumulate(h.counts)), h.sum)


@lru_cache(maxsize=8)
def _le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The buckets' ``le`` labels as printed, ``+Inf`` last (bounds are few and fixed)."""
    return tuple("+Inf" if le == INF else repr(float(le)) for le in [*bounds, INF])


class MigdCollector:
    def __init__(self, system, version: str) -> None:
        self.sys = system
        self.version = version

    def describe(self):
        return []  # no scrape at registration

    def collect(self):
        """prometheus-client's families, for a registry (the ``name[]`` filter, tests)."""
        for fam in self.families():
            yield fam.metric()

    def families(self):
        """Every family, as label values and values (the scrape's encoder's input)."""
        sys = self.sys
        snap = sys.reads.snapshot()  # the tree's node files read the same snapshot
        s = snap.stats
        yield Info("migd_migrator", "The active migrator (none: CPU default).",
                   ("migrator", "profile"), [(sys.active_migrator(), sys.profile.name)])
        yield Info("migd_build", "migd's version.", ("version",), [(self.version,)])
        budget = sys.engine.budget_statistics()
        yield Gauge("migd_max_inaccessible_seconds",
                    "The latency budget (max_inaccessible_us); 0: off.", (), [()],
                    [budget.budget_us * 1e-6])
        yield Counter("migd_budget_batches", "Batches run under a latency budget.", (), [()],
                      [budget.batches])
        yield Counter("migd_budget_exceeded_batches",
                      "Batches under a budget whose longest inaccessible time exceeded it.",
                      (), [()], [budget.exceeded])
        reasons = [(r,) for r in s.vmstat_by_reason]
        rows = list(s.vmstat_by_reason.values())
        for item in VMSTAT_ITEMS:  # the kernel's vmstat items, by reason
            unit = "pages" if item.startswith("pg") else "folios"
            yield Counter(f"migd_{item}_{unit}", f"/proc/vmstat {item}, by reason.",
                          ("reason",), reasons, [row[item] for row in rows])
        migrators = migrator_names()  # the catalogue, read at each scrape
        pairs = _pairs(migrators)
        for name, doc, d in (
                ("migd_migrated_folios", "Folios migrated.", s.folios_migrated),
                ("migd_failed_folios", "Folios that failed to migrate.", s.folios_failed),
                ("migd_migrated_bytes", "Bytes of folios migrated.", s.bytes_migrated),
                ("migd_failed_bytes", "Bytes of folios that failed.", s.bytes_failed)):
            yield _complete(Counter, name, doc, ("migrator", "reason"), d, pairs)
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
            yield _complete(Counter, name, doc, (label,), {(k,): v for k, v in d.items()},
                            _singles(keys))
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
        yield from self._cgroups(s)
        yield from self._clears()
        injected = sys.faults.injected()
        yield Counter("migd_faults_injected", "Injected faults, by fault point.", ("point",),
                      [(p,) for p in injected], list(injected.values()))

    def _clears(self):
        """Faults that got a zeroed folio, by how (``pool``: a parked folio,
        ``dma``: the clearing offload, ``cpu``: ``folio_zero_user()``), the CPU
        they spent clearing, and the prezero pool per node."""
        sys = self.sys
        by_how = sys.faults_by_how
        yield Counter("migd_offload_clear_faults", "Faults that mapped a zeroed folio, by how "
                      "it was zeroed.", ("how",), [(h,) for h in by_how], list(by_how.values()))
        yield Counter("migd_offload_clear_cpu_seconds",
                      "CPU time faults spent clearing (modelled).", (), [()],
                      [sys.fault_cpu_seconds])
        pool = sys.prezero
        nodes = [(str(nid),) for nid in range(len(pool.parked))]
        yield Gauge("migd_prezero_pool_folios", "Pre-zeroed PMD folios parked.", ("node",),
                    nodes, [pool.node_size(nid) for nid in range(len(nodes))])
        yield Counter("migd_prezero_pool_hits", "THP faults served a parked folio.",
                      ("node",), nodes, [int(pool.hits[nid]) for nid in range(len(nodes))])
        yield Counter("migd_prezero_pool_misses", "THP faults that found no parked folio.",
                      ("node",), nodes, [int(pool.misses[nid]) for nid in range(len(nodes))])

    def _migrator_params(self):
        """What each migrator declares, by parameter name, one sample per migrator."""
        fams: dict[str, Family] = {}
        for e in offload_migrators():
            m = self.sys.migrators.get(e.name)
            for p in e.params if m is not None else ():
                value = p.value(m)
                if isinstance(value, str):  # a name (a variant): an info gauge
                    fam = fams.get(p.name) or fams.setdefault(p.name, Gauge(
                        f"migd_migrator_param_{p.name}_info",
                        f"Migrator parameter {p.name}: {p.help}.", ("migrator", p.name)))
                    fam.add((e.name, value), 1)
                    continue
                fam = fams.get(p.name)
                if fam is None:
                    cls = Counter if p.counter else Gauge
                    fam = fams[p.name] = cls(f"migd_migrator_param_{p.name}",
                                             f"Migrator parameter {p.name}: {p.help}.",
                                             ("migrator",))
                fam.add((e.name,), value)
        yield from fams.values()

    def _dma(self):
        dev = self.sys.dma
        chans = dev.channels
        keys = [(ch.device_name, str(ch.index)) for ch in chans]
        labels = ("device", "channel")
        yield Counter("migd_dma_channel_busy_seconds", "Time a DMA channel spent on "
                      "descriptors.", labels, keys, [ch.busy_seconds for ch in chans])
        yield Counter("migd_dma_channel_transferred_bytes", "Bytes a DMA channel copied.",
                      labels, keys, [ch.bytes_transferred for ch in chans])
        yield Counter("migd_dma_channel_descriptors", "Memcpy descriptors a DMA channel "
                      "completed.", labels, keys, [ch.memcpy_count for ch in chans])
        device = [(f"dma{dev.dev_id}",)]
        yield Counter("migd_dma_batches_refused", "Batches refused (-EBUSY).", ("device",),
                      device, [dev.batches_refused])
        yield Counter("migd_dma_unreported_errors",
                      "Descriptors that failed or completed short on an engine that reports "
                      "no descriptor errors: their folios were remapped uncopied.", ("device",),
                      device, [dev.unreported_errors])

    def _nodes(self, nodes):
        keys = [(str(n.nid),) for n in nodes]
        yield Gauge("migd_node_capacity_bytes", "Node memory.", ("node",), keys,
                    [n.nr_pages * PAGE_SIZE for n in nodes])
        yield Gauge("migd_node_used_bytes", "Node memory in use.", ("node",), keys,
                    [(n.nr_pages - n.free) * PAGE_SIZE for n in nodes])
        for item in nodes[0].vmstat:
            unit = "pages" if item.startswith("pg") else "folios"
            if item in ("compact_stall", "compact_fail", "compact_success",
                        "compact_daemon_wake"):
                unit = "runs"
            yield Counter(f"migd_{item}_{unit}", f"Node vmstat {item}.", ("node",), keys,
                          [n.vmstat[item] for n in nodes])

    def _tenants(self):
        tenants = self.sys.tenants
        keys = [(t.name,) for t in tenants]
        stats = [t.statistics() for t in tenants]
        yield Counter("migd_tenant_stall_seconds", "Time a tenant waited on migration "
                      "entries.", ("tenant",), keys, [st.stall_seconds for st in stats])
        yield Counter("migd_tenant_stalls", "Accesses that met a migration entry.",
                      ("tenant",), keys, [st.stalls for st in stats])

    def _cgroups(self, stats):
        """The tenants' cgroups (``fs/cgroup/<tenant>/memory.stat``'s figures):
        DMA channel and CPU copy time charged to each tenant's folios, by
        migrator, and its tiering events; the CPU time from the scrape's
        statistics snapshot (a second ``statistics()`` would cost as much again)."""
        sys = self.sys
        if not hasattr(sys, "memcg"):
            return
        dma = Counter("migd_cgroup_dma_busy_seconds", "DMA channel time charged to the "
                      "tenant's folios, by migrator.", ("tenant", "migrator"))
        cpu = Counter("migd_cgroup_copy_cpu_seconds", "CPU copy time spent on the tenant's "
                      "folios, by migrator.", ("tenant", "migrator"))
        ev = Counter("migd_cgroup_events", "memory.stat tiering events (base pages), by "
                     "item.", ("tenant", "item"))
        by_owner = stats.cpu_copy_seconds_by_owner
        dma_migrators, labels = sys.dma_migrators(), sys.migrator_labels()
        for t in sys.tenants:
            for name in dma_migrators:
                dma.add((t.name, name), sys.dma.busy_by_owner(t.tid))
            for who in labels:
                cpu.add((t.name, who), by_owner.get((who, t.tid), 0.0))
            for item, counts in sys.memcg.events.items():
                ev.add((t.name, item), int(counts[t.tid]))
        yield dma
        yield cpu
        yield ev


@lru_cache(maxsize=8)
def _pairs(migrators: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(migrator, reason) label values, every pair (the catalogue changes rarely)."""
    return tuple((m, r.label) for m in migrators for r in MigrateReason)


@lru_cache(maxsize=16)
def _singles(keys: tuple[str, ...]) -> tuple[tuple[str], ...]:
    return tuple((k,) for k in keys)
