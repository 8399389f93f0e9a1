"""The tree's status files and triggers, declared as :class:`Knob` s like the tunables.

Per DMA channel, per node and per tenant (``{}`` in the path, filled from the
System's shape), plus ``proc/vmstat`` and ``compact_memory``.  Status files
print the kernel's formats (drivers/base/node.c ``node_read_meminfo``,
mm/vmstat.c, fs/proc/task_mmu.c ``show_numa_map``); triggers start the callers
of ``migrate_pages()`` that ``_workloads`` runs.  Kept apart from ``_knobs``
because triggers need the workloads, and the config (which reads ``_knobs``)
must not.
"""

from __future__ import annotations

from ..migrate import VMSTAT_ITEMS
from ..mm import PAGE_SIZE
from ._knobs import Int, Knob
from ._system import TENANT_PID_BASE
from ._workloads import compact_all, demote_node, move_tenant

KB = 1024


def _channels(sys):
    return [(ch.name, ch) for ch in sys.dma.channels]


def _nodes(sys):
    return [(str(n.nid), n) for n in sys.machine.memory.nodes]


def _demoting_nodes(sys):
    return [(str(n.nid), n) for n in sys.machine.memory.nodes if n.demotion_target is not None]


def _tenants(sys):
    return [(str(TENANT_PID_BASE + t.tid), t) for t in sys.tenants]


async def _compact(sys, inst, value: int) -> None:
    await compact_all(sys)


def files() -> list[Knob]:
    dma, node, pid = "class/dma/{}", "devices/system/node/node{}", "proc/{}"
    return [
        *(Knob(f"{dma}/{f}", what, get=lambda s, c, f=f: getattr(c, f), each=_channels,
               slot="dma0chan<C>", family="dma")
          for f, what in (("memcpy_count", "memcpy descriptors the channel completed"),
                          ("bytes_transferred", "bytes the channel copied"))),
        Knob(f"{dma}/in_use", "1 while a batch holds the channel",
             get=lambda s, c: int(c.in_use), each=_channels, slot="dma0chan<C>", family="dma"),
        Knob(f"{node}/meminfo", "the node's memory, as the kernel prints it",
             show=_meminfo, each=_nodes, slot="<N>", family="nodes"),
        Knob(f"{node}/vmstat", "the node's vmstat items", show=_node_vmstat, each=_nodes,
             slot="<N>", family="nodes"),
        Knob(f"{node}/demote", "write N: demote N cold pages to the demotion target",
             set=lambda s, n, v: demote_node(s, n.nid, v),
             parse=Int(1, lambda s, n: n.nr_pages, "1..the node's pages"),
             each=_demoting_nodes, slot="<N>", family="nodes"),
        Knob("proc/vmstat", "the kernel's vmstat lines for migration", show=_vmstat,
             family="proc"),
        Knob("proc/sys/vm/compact_memory", "write 1: compact every node (reason compaction)",
             set=_compact, parse=Int(1, 1), family="proc"),
        Knob(f"{pid}/comm", "the tenant's name", show=lambda s, t: t.name, each=_tenants,
             slot="<pid>", family="proc"),
        Knob(f"{pid}/numa_maps", "where the tenant's pages are, per node", show=_numa_maps,
             each=_tenants, slot="<pid>", family="proc"),
        Knob(f"{pid}/migrate", "write a node index: move the tenant's pages there",
             set=lambda s, t, v: move_tenant(s, t, v),
             parse=Int(0, lambda s, t: len(s.machine.memory.nodes) - 1, "a node index"),
             each=_tenants, slot="<pid>", family="proc"),
    ]


def _meminfo(sys, node) -> str:
    mem = sys.machine.memory
    orders = mem.folio_order[node.start_pfn:node.end_pfn]
    used = int((orders >= 0).sum())
    thp = int((orders == 9).sum())
    free = node.nr_free_pages
    n = node.nid
    rows = [("MemTotal", node.nr_pages), ("MemFree", free), ("MemUsed", node.nr_pages - free),
            ("AnonPages", used), ("AnonHugePages", thp)]
    return "\n".join(f"Node {n} {k + ':':<15} {v * PAGE_SIZE // KB:>10} kB" for k, v in rows)


def _node_vmstat(sys, node) -> str:
    mem = sys.machine.memory
    orders = mem.folio_order[node.start_pfn:node.end_pfn]
    rows = [("nr_free_pages", node.nr_free_pages),
            ("nr_anon_pages", int((orders >= 0).sum())),
            ("nr_anon_transparent_hugepages", int((orders == 9).sum()) // 512)]
    rows += [(k, int(v[node.nid])) for k, v in sys.node_vmstat.items()]
    return "\n".join(f"{k} {v}" for k, v in rows)


def _vmstat(sys, inst) -> str:
    s = sys.engine.statistics().vmstat
    free = sum(n.nr_free_pages for n in sys.machine.memory.nodes)
    rows = [("nr_free_pages", free)] + [(k, s[k]) for k in VMSTAT_ITEMS]
    rows += [(k, int(v.sum())) for k, v in sys.node_vmstat.items()]
    return "\n".join(f"{k} {v}" for k, v in rows)


def _numa_maps(sys, t) -> str:
    mem = sys.machine.memory
    per_node = mem.nid_of[t.pte_pfn]
    counts = [int((per_node == n.nid).sum()) for n in mem.nodes]
    nodes = " ".join(f"N{i}={c}" for i, c in enumerate(counts) if c)
    kb = (PAGE_SIZE << t.spec.order) // KB
    return (f"{0x7f0000000000 + (t.tid << 36):x} default anon={t.nr_pages} "
            f"dirty={t.nr_pages} {nodes} kernelpagesize_kB={kb}")
