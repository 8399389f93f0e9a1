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
from ._memcg import memory_stat
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


def _cgroups(sys):
    """Each tenant's cgroup directory: its name, unless that is not a usable
    directory name (empty, ``.``, a ``/``, taken), then ``tenant<pid>``."""
    out, seen = [], set()
    for t in sys.tenants:
        name = t.name
        if not name or name in (".", "..") or "/" in name or name in seen:
            name = f"tenant{TENANT_PID_BASE + t.tid}"
        seen.add(name)
        out.append((name, t))
    return out


async def _compact(sys, inst, value: int) -> None:
    await compact_all(sys)


def _status(sys, t) -> str:
    """fs/proc/array.c ``proc_pid_status``: ``task_name``, ``task_state`` and
    ``task_cpus_allowed``'s Mems line, for a single-threaded root task that
    sleeps between its accesses; lines for what the tenant has no value of
    (signals, capabilities, memory sizes) are left out."""
    pid = TENANT_PID_BASE + t.tid
    ids = "0\t0\t0\t0"
    nodes = len(sys.machine.memory.nodes)
    return (f"Name:\t{t.name[:15]}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\n"
            f"Ngid:\t0\nPid:\t{pid}\nPPid:\t1\nTracerPid:\t0\nUid:\t{ids}\nGid:\t{ids}\n"
            f"Threads:\t1\nMems_allowed_list:\t0-{nodes - 1}")


def files() -> list[Knob]:
    dma, node, pid = "class/dma/{}", "devices/system/node/node{}", "proc/{}"
    return [
        *(Knob(f"{dma}/{f}", what, get=lambda s, c, f=f: getattr(c, f), each=_channels,
               slot="dma<N>chan<C>", family="dma")
          for f, what in (("memcpy_count", "memcpy descriptors the channel completed"),
                          ("bytes_transferred", "bytes the channel copied"))),
        Knob(f"{dma}/in_use", "the channel's client count (dmaengine.c in_use_show): "
             "1 while a batch holds an exclusive (PTDMA, DSA) channel; on a shared engine "
             "(native, SDXI), the batches using it", get=lambda s, c: c.client_count,
             each=_channels,
             slot="dma<N>chan<C>", family="dma"),
        Knob(f"{node}/demote", "write N: demote N cold pages to the demotion target",
             set=lambda s, n, v: demote_node(s, n.nid, v),
             parse=Int(1, lambda s, n: n.nr_pages, "1..the node's pages"),
             each=_demoting_nodes, slot="<N>", family="nodes"),
        Knob("proc/sys/vm/compact_memory", "write 1: compact every node (reason compaction)",
             set=_compact, parse=Int(1, 1), family="proc"),
        Knob(f"{pid}/comm", "the tenant's name", show=lambda s, t: t.name, each=_tenants,
             slot="<pid>", family="proc"),
        Knob(f"{pid}/status", "the tenant as proc_pid_status prints a task's first "
             "lines (Name ... Gid, Threads, Mems_allowed_list); numastat -p reads its Name",
             show=_status, each=_tenants, slot="<pid>", family="proc"),
        Knob(f"{pid}/cmdline", "the tenant's name, NUL-terminated as its argv[0] "
             "(proc_pid_cmdline_read); numastat -p reads it", show=lambda s, t: t.name + "\0",
             each=_tenants, slot="<pid>", family="proc"),
        Knob(f"{pid}/migrate", "write a node index: move the tenant's pages there",
             set=lambda s, t, v: move_tenant(s, t, v),
             parse=Int(0, lambda s, t: len(s.machine.memory.nodes) - 1, "a node index"),
             each=_tenants, slot="<pid>", family="proc"),
        Knob("fs/cgroup/{}/memory.stat", "the tenant's cgroup as memory_stat_format() "
             "prints it (anon, anon_thp, unevictable, pgdemote_*, pgpromote_success), then "
             "migd's migrate_dma_busy_usec_<migrator> and migrate_copy_cpu_usec_<migrator>",
             show=memory_stat, each=_cgroups, slot="<tenant>", family="cgroup"),
    ]

