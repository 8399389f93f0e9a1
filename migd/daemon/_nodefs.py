"""The tree's kernel-format files: node directories, ``proc/vmstat``, ``numa_maps``.

Each show function prints what the kernel function it names prints, so tools
written against the kernel read them unmodified: prometheus-node-exporter's
meminfo_numa and vmstat collectors, ``numastat``, ``numactl --hardware``
(libnuma reads ``cpumap`` and ``distance``; without them it warns "/sys not
mounted or invalid").  Keys the emulation has no value for are printed as 0,
never left out: parsers index by key, and node_exporter's meminfo_numa
collector fails the whole scrape when ``numastat`` is missing.

The emulated CPUs: the host's, all on node 0 (the "dram" node; a CXL far
node has memory and no CPUs, so ``has_cpu`` is ``0``).  Distances are the
kernel's defaults, LOCAL_DISTANCE 10 and REMOTE_DISTANCE 20
(include/linux/topology.h); no SLIT is emulated.
"""

from __future__ import annotations

import os

from ..mm import HPAGE_PMD_NR, PAGE_SIZE
from ..sysfs import Attribute
from ._snapshot import CPU_NODE, NodeUsage, ReadSnapshot
from ._system import TENANT_PID_BASE, System

K = PAGE_SIZE // 1024  # node.c's K(x): pages to kB
LOCAL_DISTANCE, REMOTE_DISTANCE = 10, 20

# mm/vmstat.c vmstat_text, x86-64 Debian config (ZSMALLOC, NUMA, SWAP,
# NUMA_BALANCING, HUGETLB_PAGE, COMPACTION, MIGRATION; no HIGHMEM, no
# SHADOW_CALL_STACK): the zone, NUMA and node items node_read_vmstat prints.
ZONE_STAT_ITEMS = (
    "nr_free_pages", "nr_free_pages_blocks", "nr_zone_inactive_anon", "nr_zone_active_anon",
    "nr_zone_inactive_file", "nr_zone_active_file", "nr_zone_unevictable",
    "nr_zone_write_pending", "nr_mlock", "nr_bounce", "nr_zspages", "nr_free_cma")
NUMA_STAT_ITEMS = ("numa_hit", "numa_miss", "numa_foreign", "numa_interleave", "numa_local",
                   "numa_other")
NODE_STAT_ITEMS = (
    "nr_inactive_anon", "nr_active_anon", "nr_inactive_file", "nr_active_file",
    "nr_unevictable", "nr_slab_reclaimable", "nr_slab_unreclaimable", "nr_isolated_anon",
    "nr_isolated_file", "workingset_nodes", "workingset_refault_anon",
    "workingset_refault_file", "workingset_activate_anon", "workingset_activate_file",
    "workingset_restore_anon", "workingset_restore_file", "workingset_nodereclaim",
    "nr_anon_pages", "nr_mapped", "nr_file_pages", "nr_dirty", "nr_writeback",
    "nr_writeback_temp", "nr_shmem", "nr_shmem_hugepages", "nr_shmem_pmdmapped",
    "nr_file_hugepages", "nr_file_pmdmapped", "nr_anon_transparent_hugepages",
    "nr_vmscan_write", "nr_vmscan_immediate_reclaim", "nr_dirtied", "nr_written",
    "nr_throttled_written", "nr_kernel_misc_reclaimable", "nr_foll_pin_acquired",
    "nr_foll_pin_released", "nr_kernel_stack", "nr_page_table_pages",
    "nr_sec_page_table_pages", "nr_iommu_pages", "nr_swapcached", "pgpromote_success",
    "pgpromote_candidate", "pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged",
    "pgdemote_proactive", "nr_hugetlb", "nr_balloon_pages")
#: The vm_event items about migration, in vmstat_text order (global only).
MIGRATION_EVENT_ITEMS = (
    "numa_pte_updates", "numa_huge_pte_updates", "numa_hint_faults", "numa_hint_faults_local",
    "numa_pages_migrated", "pgmigrate_success", "pgmigrate_fail", "thp_migration_success",
    "thp_migration_fail", "thp_migration_split", "compact_migrate_scanned",
    "compact_free_scanned", "compact_isolated", "compact_stall", "compact_fail",
    "compact_success", "compact_daemon_wake", "compact_daemon_migrate_scanned",
    "compact_daemon_free_scanned")
#: Node items printed in THP units (vmstat_item_print_in_thp()).
_IN_THP = ("nr_shmem_hugepages", "nr_shmem_pmdmapped", "nr_file_hugepages",
           "nr_file_pmdmapped", "nr_anon_transparent_hugepages")

# node_read_meminfo's labels, padding included, as drivers/base/node.c spells
# them (FileHugePages and FilePmdMapped really have one space less).
MEMINFO_LABELS = (
    "MemTotal:       ", "MemFree:        ", "MemUsed:        ", "Active:         ",
    "Inactive:       ", "Active(anon):   ", "Inactive(anon): ", "Active(file):   ",
    "Inactive(file): ", "Unevictable:    ", "Mlocked:        ", "Dirty:          ",
    "Writeback:      ", "FilePages:      ", "Mapped:         ", "AnonPages:      ",
    "Shmem:          ", "KernelStack:    ", "PageTables:     ", "NFS_Unstable:   ",
    "Bounce:         ", "WritebackTmp:   ", "KReclaimable:   ", "Slab:           ",
    "SReclaimable:   ", "SUnreclaim:     ", "AnonHugePages:  ", "ShmemHugePages: ",
    "ShmemPmdMapped: ", "FileHugePages: ", "FilePmdMapped: ")
# hugetlb_report_node_meminfo (mm/hugetlb.c): "%5u", no unit.
HUGETLB_LABELS = ("HugePages_Total: ", "HugePages_Free:  ", "HugePages_Surp:  ")


def nr_cpus() -> int:
    return os.cpu_count() or 1


def bitmap_string(bits: set[int], nbits: int) -> str:
    """``%*pb`` (lib/vsprintf.c bitmap_string): 32-bit hex chunks, most
    significant first, comma-separated; the first chunk as wide as its bits."""
    value = sum(1 << b for b in bits)
    chunks = []
    for lo in range(0, nbits, 32):
        width = min(32, nbits - lo)
        chunks.append(f"{(value >> lo) & ((1 << width) - 1):0{(width + 3) // 4}x}")
    return ",".join(reversed(chunks))


def bitmap_list_string(bits: set[int]) -> str:
    """``%*pbl`` (bitmap_list_string): ranges ``a-b`` and singles, comma-separated."""
    out, run = [], []
    for b in sorted(bits):
        if run and b == run[-1] + 1:
            run.append(b)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [b]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ",".join(out)


class NodeState:
    """What the node files print, from the System's read snapshot (``_snapshot``):
    the node files render once per measured usage, ``proc/vmstat`` once per usage
    and engine counts."""

    def __init__(self, sys: System) -> None:
        self.sys = sys
        self.mem = sys.machine.memory
        self.reads = sys.reads

    def cpus(self, nid: int) -> set[int]:
        return set(range(nr_cpus())) if nid == CPU_NODE else set()


def node_vmstat(u: NodeUsage) -> dict[str, int]:
    """``node_read_vmstat``'s items of one node, from its measured usage."""
    v = dict.fromkeys(ZONE_STAT_ITEMS + NUMA_STAT_ITEMS + NODE_STAT_ITEMS, 0)
    v.update(nr_free_pages=u.free, nr_zone_active_anon=u.used - u.mlocked,
             nr_zone_unevictable=u.mlocked, nr_mlock=u.mlocked,
             nr_active_anon=u.used - u.mlocked, nr_unevictable=u.mlocked,
             nr_anon_pages=u.used, nr_anon_transparent_hugepages=u.thp)
    v.update(zip(NUMA_STAT_ITEMS, u.numastat, strict=True))
    v.update((k, n) for k, n in u.vmstat.items() if k in v)
    for k in _IN_THP:
        v[k] //= HPAGE_PMD_NR
    return v


def show_meminfo(u: NodeUsage) -> str:
    """``node_read_meminfo``: ``Node %d <label>%8lu kB`` and the hugetlb lines."""
    active = u.used - u.mlocked
    values = dict.fromkeys(MEMINFO_LABELS, 0)
    values.update({
        "MemTotal:       ": u.nr_pages, "MemFree:        ": u.free,
        "MemUsed:        ": u.nr_pages - u.free, "Active:         ": active,
        "Active(anon):   ": active, "Unevictable:    ": u.mlocked,
        "Mlocked:        ": u.mlocked, "AnonPages:      ": u.used,
        "AnonHugePages:  ": u.thp})
    n = u.nid
    lines = [f"Node {n} {label}{v * K:8d} kB" for label, v in values.items()]
    lines += [f"Node {n} {label}{0:5d}" for label in HUGETLB_LABELS]
    return "\n".join(lines)


def show_numastat(u: NodeUsage) -> str:
    """``node_read_numastat``."""
    names = ("numa_hit", "numa_miss", "numa_foreign", "interleave_hit", "local_node",
             "other_node")
    return "\n".join(f"{k} {v}" for k, v in zip(names, u.numastat, strict=True))


def show_node_vmstat(u: NodeUsage) -> str:
    """``node_read_vmstat``: zone, NUMA and node items; no vm events (global)."""
    return "\n".join(f"{k} {v}" for k, v in node_vmstat(u).items())


def show_distance(state: NodeState, node) -> str:
    """``node_read_distance``: one distance per online node, space-separated."""
    return " ".join(str(LOCAL_DISTANCE if i == node.nid else REMOTE_DISTANCE)
                    for i in range(len(state.mem.nodes)))


def show_vmstat(snap: ReadSnapshot) -> str:
    """``vmstat_show`` for the items migd keeps: zone, NUMA and node items
    summed over nodes, then the migration vm events, in vmstat_text order."""
    total: dict[str, int] = {}
    for u in snap.nodes:
        for k, v in node_vmstat(u).items():
            total[k] = total.get(k, 0) + v
    s = snap.stats
    events = dict.fromkeys(MIGRATION_EVENT_ITEMS, 0)
    events.update({k: v for k, v in s.vmstat.items() if k in events})
    events["numa_pages_migrated"] = s.vmstat_by_reason.get("numa_misplaced", {}).get(
        "pgmigrate_success", 0)
    for k in snap.nodes[0].vmstat:  # the callers' counters, summed over nodes
        if k in events:
            events[k] = sum(u.vmstat[k] for u in snap.nodes)
    return "\n".join(f"{k} {v}" for k, v in (*total.items(), *events.items()))


def _node_file(state: NodeState, nid: int, show) -> str:
    """A node file's text, rendered once per measured usage."""
    u = state.reads.usage()
    return u.render((show, nid), lambda: show(u.nodes[nid]))


def _vmstat_file(state: NodeState) -> str:
    """``proc/vmstat``, rendered once per usage and engine counts."""
    snap = state.reads.snapshot()
    s = snap.stats
    return snap.usage.render((show_vmstat, *s.vmstat.values(),
                              s.vmstat_by_reason.get("numa_misplaced", {}).get(
                                  "pgmigrate_success", 0)), lambda: show_vmstat(snap))


def show_numa_map(state: NodeState, tenant) -> str:
    """``show_numa_map`` for the tenant's one anonymous mapping.

    Counts are base pages (gather_stats adds HPAGE_PMD_NR per PMD-mapped THP)
    and ``kernelpagesize_kB`` is ``vma_kernel_pagesize()``: 4 for anonymous
    THP, a hugetlb size only for hugetlb (migd has none, so no ``huge``).
    Pages under a migration entry are not ``pte_present`` and not counted.
    Every page was written at fault-in (dirty) and is active, so ``active=``
    is left out as the kernel leaves it out when it equals the page count.
    """
    per_node = state.reads.present_per_node(tenant)
    pages = int(per_node.sum())
    head = f"{0x7f0000000000 + (tenant.tid << 36):08x} default"
    if not pages:
        return head
    fields = [f"anon={pages}", f"dirty={pages}"]
    fields += [f"N{i}={int(c)}" for i, c in enumerate(per_node) if c]
    return f"{head} {' '.join(fields)} kernelpagesize_kB={PAGE_SIZE // 1024}"


def add_node_files(add, sys: System) -> None:
    """``devices/system/node``, ``proc/vmstat`` and ``proc/<pid>/numa_maps``."""
    state = NodeState(sys)
    sys.reads.warm_up()  # compile now, not on the first reader's thread
    nodes = sys.machine.memory.nodes
    every = set(range(len(nodes)))
    root = "devices/system/node"
    for name, members in (("possible", every), ("online", every), ("has_memory", every),
                          ("has_normal_memory", every), ("has_cpu", {CPU_NODE})):
        add(f"{root}/{name}", Attribute(lambda m=members: bitmap_list_string(m)))
    for node in nodes:
        base = f"{root}/node{node.nid}"
        add(f"{base}/cpumap", Attribute(
            lambda n=node: bitmap_string(state.cpus(n.nid), nr_cpus())))
        add(f"{base}/cpulist", Attribute(lambda n=node: bitmap_list_string(state.cpus(n.nid))))
        add(f"{base}/distance", Attribute(lambda n=node: show_distance(state, n)))
        for name, show in (("meminfo", show_meminfo), ("numastat", show_numastat),
                           ("vmstat", show_node_vmstat)):
            add(f"{base}/{name}", Attribute(
                lambda n=node.nid, show=show: _node_file(state, n, show)))
    add("proc/vmstat", Attribute(lambda: _vmstat_file(state)))
    for t in sys.tenants:
        add(f"proc/{TENANT_PID_BASE + t.tid}/numa_maps",
            Attribute(lambda t=t: show_numa_map(state, t)))
