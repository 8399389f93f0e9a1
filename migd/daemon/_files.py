"""The tree's status files and triggers, declared as :class:`Knob` s like the tunables.

Per DMA channel, per node and per tenant (``{}`` in the path, filled from the
System's shape), plus ``compact_memory``.  Triggers start the callers of
``migrate_pages()`` that ``_workloads`` runs.  The files whose layout is the
kernel's own (node directories, ``proc/vmstat``, ``numa_maps``) are
``_nodefs``'s, tracefs is ``_tracefs``'s.  Kept apart from ``_knobs``
because triggers need the workloads, and the config (which reads ``_knobs``)
must not.
"""

from __future__ import annotations

from ._knobs import Int, Knob
from ._system import TENANT_PID_BASE
from ._workloads import compact_all, demote_node, move_tenant


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
               slot="dma<N>chan<C>", family="dma")
          for f, what in (("memcpy_count", "memcpy descriptors the channel completed"),
                          ("bytes_transferred", "bytes the channel copied"))),
        Knob(f"{dma}/in_use", "the channel's client count (dmaengine.c in_use_show): "
             "1 while a migrator holds it", get=lambda s, c: c.client_count, each=_channels,
             slot="dma<N>chan<C>", family="dma"),
        Knob(f"{node}/demote", "write N: demote N cold pages to the demotion target",
             set=lambda s, n, v: demote_node(s, n.nid, v),
             parse=Int(1, lambda s, n: n.nr_pages, "1..the node's pages"),
             each=_demoting_nodes, slot="<N>", family="nodes"),
        Knob("proc/sys/vm/compact_memory", "write 1: compact every node (reason compaction)",
             set=_compact, parse=Int(1, 1), family="proc"),
        Knob(f"{pid}/comm", "the tenant's name", show=lambda s, t: t.name, each=_tenants,
             slot="<pid>", family="proc"),
        Knob(f"{pid}/migrate", "write a node index: move the tenant's pages there",
             set=lambda s, t, v: move_tenant(s, t, v),
             parse=Int(0, lambda s, t: len(s.machine.memory.nodes) - 1, "a node index"),
             each=_tenants, slot="<pid>", family="proc"),
    ]

