"""What the tree's node files and the metrics read: one snapshot, shared.

``ReadSnapshots.snapshot()`` gives the engine's ``statistics()`` (fresh at
each call, ~40 us) and the nodes' usage (allocated, THP and mlocked pages,
numastat, the callers' vmstat items), which is measured again only when the
allocator's counts or the callers' counters moved since the last measure: a
key of the buddy's allocations and free pages per node (every alloc raises
the first, a run of frees only raises the second) and the callers' arrays.
The node files render from it and keep their text per usage, so N readers of
``node0/meminfo`` between two batches cost one render; the collector reads the
same snapshot.  The measure itself is a compiled pass over the node's struct
pages (``node_usage``, as ``si_meminfo_node()`` sums counters the kernel
keeps, which migd does not), in calls of :data:`PASS_PAGES`: the numpy pass it
replaces held the GIL for ~0.7 ms per node file, ~93% of a walk of the whole
tree, and the migration's Python steps and every other reader waited on it.

Rejected: publishing from the trio thread after every batch (a write on the
migration's path even when nobody reads, and the callers' counters move
outside batches), and a snapshot at most every few ms (a read right after a
finished ``move_pages()`` would show the state before it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from ..migrate import EngineStatistics
from ..mm import HPAGE_PMD_NR, HPAGE_PMD_ORDER, PG_mlocked

#: Pages (or ptes) a compiled pass covers per call, ~200 us at 1.5 ns a page.
#: The passes keep the GIL (no ``nogil``): a release is a race for the GIL
#: again, which a reader or a scrape loses to a crowd of waiters (CPython
#: 3.11's take_gil(), see migd._gil); between calls the eval loop still hands
#: the GIL to a thread that has waited a switch interval.  Measured under 16
#: readers and 20 scrapes/s: the scrape's collect p99 15.7 ms with the passes
#: GIL-free, 4.8 ms holding it (docs/design.md, "The GIL handed over").
PASS_PAGES = 1 << 17


def _in_passes(compiled_pass, lo: int, hi: int, *args) -> tuple[int, int, int]:
    """``compiled_pass(*args, lo, hi)`` over [lo, hi) in calls of
    :data:`PASS_PAGES`, its (used, thp, mlocked) summed."""
    used = thp = mlocked = 0
    for at in range(lo, hi, PASS_PAGES):
        u, t, m = compiled_pass(*args, at, min(hi, at + PASS_PAGES))
        used, thp, mlocked = used + u, thp + t, mlocked + m
    return used, thp, mlocked


@numba.njit(cache=True)
def _node_usage(order, flags, mlocked_flag, thp_pages, start, end):  # pragma: no cover (compiled)
    """Pages of [start, end) in a folio, in PMD-sized folios, in mlocked
    folios: every page of a folio carries its order, the head is the page
    aligned to it (flags are the head's)."""
    used = thp = mlocked = 0
    for pfn in range(start, end):
        o = order[pfn]
        if o < 0:
            continue
        used += 1
        size = 1 << o
        if pfn & (size - 1) == 0:
            if size == thp_pages:
                thp += size
            if flags[pfn] & mlocked_flag:
                mlocked += size
    return used, thp, mlocked


def node_usage(order, flags, start, end, mlocked_flag, thp_pages) -> tuple[int, int, int]:
    return _in_passes(_node_usage, start, end, order, flags, mlocked_flag, thp_pages)


@numba.njit(cache=True)
def _present_per_node(pte_pfn, migration_entry, nid_of, out, lo, hi):  # pragma: no cover
    """Per node, the virtual pages of [lo, hi) whose pte is present (no
    migration entry), added to ``out``."""
    for i in range(lo, hi):
        if not migration_entry[i]:
            out[nid_of[pte_pfn[i]]] += 1


def present_per_node(pte_pfn, migration_entry, nid_of, nr_nodes) -> np.ndarray:
    out = np.zeros(nr_nodes, dtype=np.int64)
    for lo in range(0, pte_pfn.size, PASS_PAGES):
        _present_per_node(pte_pfn, migration_entry, nid_of, out, lo,
                          min(pte_pfn.size, lo + PASS_PAGES))
    return out


@numba.njit(cache=True)
def _tenant_usage(pte_pfn, order, flags, mlocked_flag, thp_order, seen, lo, hi):  # pragma: no cover
    """Pages of the folios the ptes [lo, hi) map that ``seen`` has not
    counted (each folio once), in folios of ``thp_order`` or more, in mlocked
    folios.  A pte whose page was freed under it (a migration finishing
    meanwhile) is passed over."""
    used = thp = mlocked = 0
    for i in range(lo, hi):
        pfn = pte_pfn[i]
        o = order[pfn] if 0 <= pfn < order.size else -1
        if o < 0:
            continue
        size = 1 << o
        head = pfn & ~(size - 1)
        if seen[head]:
            continue
        seen[head] = True
        used += size
        if o >= thp_order:
            thp += size
        if flags[head] & mlocked_flag:
            mlocked += size
    return used, thp, mlocked


def tenant_usage(pte_pfn, order, flags, mlocked_flag, thp_order) -> tuple[int, int, int]:
    seen = np.zeros(order.size, dtype=np.bool_)
    return _in_passes(_tenant_usage, 0, pte_pfn.size, pte_pfn, order, flags, mlocked_flag,
                      thp_order, seen)


@dataclass(frozen=True)
class NodeUsage:
    """One node's figures (pages), measured together."""

    nid: int
    nr_pages: int
    free: int
    used: int
    thp: int
    mlocked: int
    #: numa_hit, numa_miss, numa_foreign, interleave_hit, local_node, other_node
    numastat: tuple[int, ...]
    #: the callers' counters kept as the kernel's node vmstat items
    vmstat: dict[str, int]


@dataclass(frozen=True)
class Usage:
    """Every node's usage under one key; ``texts`` holds what was rendered from it."""

    key: tuple
    nodes: tuple[NodeUsage, ...]
    texts: dict = field(default_factory=dict, compare=False)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def render(self, name, show: Callable[[], str]) -> str:
        """``show()``'s text, rendered once per usage (under a lock: readers of
        the same file wait for the one render rather than each do it)."""
        with self.lock:
            text = self.texts.get(name)
            if text is None:
                text = self.texts[name] = show()
        return text


@dataclass(frozen=True)
class ReadSnapshot:
    stats: EngineStatistics
    usage: Usage

    @property
    def nodes(self) -> tuple[NodeUsage, ...]:
        return self.usage.nodes


#: The node the emulated CPUs sit on (allocations there count local_node).
CPU_NODE = 0


class ReadSnapshots:
    """The System's published view for readers on any thread (see the module)."""

    def __init__(self, sys) -> None:
        self.sys = sys
        self.mem = sys.machine.memory
        self._lock = threading.Lock()
        self._usage: Usage | None = None

    def _key(self) -> tuple:
        fa = self.mem.free_area
        return (fa.nr_allocations().tobytes(),
                tuple(fa.nr_free_pages(n.nid) for n in self.mem.nodes),
                b"".join(a.tobytes() for a in self.sys.node_vmstat.values()))

    def snapshot(self) -> ReadSnapshot:
        """The engine's statistics (first: the usage is then at least as new)
        and the nodes' usage."""
        stats = self.sys.engine.statistics()
        return ReadSnapshot(stats, self.usage())

    def usage(self) -> Usage:
        """The nodes' usage, measured again only if the key moved."""
        key = self._key()  # before the measure: a later move changes it again
        with self._lock:
            usage = self._usage
            if usage is None or usage.key != key:
                usage = self._usage = self._measure(key)
        return usage

    def _measure(self, key: tuple) -> Usage:
        """numastat as zone_statistics() counts it: every emulated allocation
        asks for one node and gets it (__GFP_THISNODE, no fallback), so each
        is a hit there, local on the CPUs' node."""
        mem = self.mem
        alloc = mem.free_area.nr_allocations()
        nodes = []
        for n in mem.nodes:
            used, thp, mlocked = node_usage(mem.folio_order, mem.flags, n.start_pfn, n.end_pfn,
                                            PG_mlocked, HPAGE_PMD_NR)
            hits = int(alloc[n.nid])
            local = n.nid == CPU_NODE
            nodes.append(NodeUsage(
                n.nid, n.nr_pages, n.nr_free_pages, used, thp, mlocked,
                (hits, 0, 0, 0, hits if local else 0, 0 if local else hits),
                {k: int(a[n.nid]) for k, a in self.sys.node_vmstat.items()}))
        return Usage(key, tuple(nodes))

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) both passes: ~1 s the first time
        on a machine, which the first ``cat`` would otherwise wait for."""
        self.snapshot()
        for t in self.sys.tenants[:1]:
            self.present_per_node(t)
            self.tenant_usage(t)

    def present_per_node(self, tenant) -> np.ndarray:
        """Per node, the tenant's pages not under a migration entry (always
        fresh: an entry lives for one batch and moves no allocator count)."""
        return present_per_node(tenant.pte_pfn, tenant.migration_entry, self.mem.nid_of,
                                len(self.mem.nodes))

    def tenant_usage(self, tenant) -> tuple[int, int, int]:
        """The tenant's (cgroup's) anon, THP and mlocked pages (``memory.stat``),
        by a compiled pass: the numpy ``np.unique`` of its
        folios it replaces held the GIL ~5 ms at order 0 (the slowest file in
        the tree) and failed (EINVAL) when a migration freed a page under it."""
        return tenant_usage(tenant.pte_pfn, self.mem.folio_order, self.mem.flags, PG_mlocked,
                            HPAGE_PMD_ORDER)
