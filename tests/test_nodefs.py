"""Node directories, proc/vmstat and numa_maps as the kernel prints them.

In-process (a System and its tree, no FUSE).  The expected text is built from
the kernel's own format strings, pasted from drivers/base/node.c,
mm/hugetlb.c, mm/vmstat.c and fs/proc/task_mmu.c (Python's ``%`` takes C's
``%8lu``), and the expected numbers from the configuration and the kernel's
counting rules, not from migd's code.
"""

from __future__ import annotations

import os
import re

import pytest
import trio

from migd.daemon import System, build_tree, load_config
from migd.daemon._workloads import move_tenant

from .helpers import BARE, MiB, config

CONFIG = config("32M", [{"name": "small", "size": "4M", "order": 0, "access_rate": 0},
                         {"name": "huge", "size": "8M", "order": 9, "access_rate": 0,
                          "mlocked": True}], **BARE | {"dma": {"profile": "native"}})

# drivers/base/node.c node_read_meminfo (CONFIG_TRANSPARENT_HUGEPAGE, no HIGHMEM,
# no SHADOW_CALL_STACK), then mm/hugetlb.c hugetlb_report_node_meminfo.
NODE_MEMINFO_FMT = (
    "Node %d MemTotal:       %8lu kB\n" "Node %d MemFree:        %8lu kB\n"
    "Node %d MemUsed:        %8lu kB\n" "Node %d Active:         %8lu kB\n"
    "Node %d Inactive:       %8lu kB\n" "Node %d Active(anon):   %8lu kB\n"
    "Node %d Inactive(anon): %8lu kB\n" "Node %d Active(file):   %8lu kB\n"
    "Node %d Inactive(file): %8lu kB\n" "Node %d Unevictable:    %8lu kB\n"
    "Node %d Mlocked:        %8lu kB\n"
    "Node %d Dirty:          %8lu kB\n" "Node %d Writeback:      %8lu kB\n"
    "Node %d FilePages:      %8lu kB\n" "Node %d Mapped:         %8lu kB\n"
    "Node %d AnonPages:      %8lu kB\n" "Node %d Shmem:          %8lu kB\n"
    "Node %d KernelStack:    %8lu kB\n" "Node %d PageTables:     %8lu kB\n"
    "Node %d NFS_Unstable:   %8lu kB\n" "Node %d Bounce:         %8lu kB\n"
    "Node %d WritebackTmp:   %8lu kB\n" "Node %d KReclaimable:   %8lu kB\n"
    "Node %d Slab:           %8lu kB\n" "Node %d SReclaimable:   %8lu kB\n"
    "Node %d SUnreclaim:     %8lu kB\n"
    "Node %d AnonHugePages:  %8lu kB\n" "Node %d ShmemHugePages: %8lu kB\n"
    "Node %d ShmemPmdMapped: %8lu kB\n" "Node %d FileHugePages: %8lu kB\n"
    "Node %d FilePmdMapped: %8lu kB\n"
    "Node %d HugePages_Total: %5u\n" "Node %d HugePages_Free:  %5u\n"
    "Node %d HugePages_Surp:  %5u\n")
NODE_NUMASTAT_FMT = ("numa_hit %lu\nnuma_miss %lu\nnuma_foreign %lu\ninterleave_hit %lu\n"
                     "local_node %lu\nother_node %lu\n")
# mm/vmstat.c vmstat_text, in order, the part between nr_free_pages and the
# compaction events (CONFIG-dependent entries as on Debian x86-64).
VMSTAT_TEXT = """nr_free_pages nr_free_pages_blocks nr_zone_inactive_anon nr_zone_active_anon
nr_zone_inactive_file nr_zone_active_file nr_zone_unevictable nr_zone_write_pending nr_mlock
nr_bounce nr_zspages nr_free_cma numa_hit numa_miss numa_foreign numa_interleave numa_local
numa_other nr_inactive_anon nr_active_anon nr_inactive_file nr_active_file nr_unevictable
nr_slab_reclaimable nr_slab_unreclaimable nr_isolated_anon nr_isolated_file workingset_nodes
workingset_refault_anon workingset_refault_file workingset_activate_anon
workingset_activate_file workingset_restore_anon workingset_restore_file
workingset_nodereclaim nr_anon_pages nr_mapped nr_file_pages nr_dirty nr_writeback
nr_writeback_temp nr_shmem nr_shmem_hugepages nr_shmem_pmdmapped nr_file_hugepages
nr_file_pmdmapped nr_anon_transparent_hugepages nr_vmscan_write nr_vmscan_immediate_reclaim
nr_dirtied nr_written nr_throttled_written nr_kernel_misc_reclaimable nr_foll_pin_acquired
nr_foll_pin_released nr_kernel_stack nr_page_table_pages nr_sec_page_table_pages
nr_iommu_pages nr_swapcached pgpromote_success pgpromote_candidate pgdemote_kswapd
pgdemote_direct pgdemote_khugepaged pgdemote_proactive nr_hugetlb nr_balloon_pages
nr_dirty_threshold nr_dirty_background_threshold nr_memmap_pages nr_memmap_boot_pages
pgpgin pgpgout pswpin pswpout pgfree numa_pte_updates numa_huge_pte_updates numa_hint_faults
numa_hint_faults_local numa_pages_migrated pgmigrate_success pgmigrate_fail
thp_migration_success thp_migration_fail thp_migration_split compact_migrate_scanned
compact_free_scanned compact_isolated compact_stall compact_fail compact_success
compact_daemon_wake compact_daemon_migrate_scanned compact_daemon_free_scanned""".split()  # noqa: SIM905
MIGRATION_ITEMS = [k for k in VMSTAT_TEXT if k.startswith((
    "pgmigrate_", "thp_migration_", "pgdemote_", "pgpromote_", "numa_pages_migrated",
    "compact_"))]
# fs/proc/task_mmu.c show_numa_map: "%08lx %s", then the fields it may print.
NUMA_MAP_RE = re.compile(
    r"(?P<start>[0-9a-f]{8,}) (?P<policy>\S+)(?: anon=(?P<anon>\d+))?(?: dirty=(?P<dirty>\d+))?"
    r"(?: mapped=\d+)?(?: mapmax=\d+)?(?: swapcache=\d+)?(?: active=\d+)?(?: writeback=\d+)?"
    r"(?P<nodes>(?: N\d+=\d+)*) kernelpagesize_kB=(?P<kps>\d+)\n\Z")


@pytest.fixture
def tree():
    # The System belongs to a trio run: its tracing boot clock is trio's.
    s = trio.run(_system)
    return s, build_tree(s)


async def _system() -> System:
    return System(load_config(text=CONFIG))


def read(tree, rel: str) -> str:
    return tree[1].read(rel).decode()


def kv(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def test_node_dir_masks_cpus_and_distances(tree):
    ncpu = os.cpu_count()
    for f in ("possible", "online", "has_memory", "has_normal_memory"):
        assert read(tree, f"devices/system/node/{f}") == "0-1\n"
    assert read(tree, "devices/system/node/has_cpu") == "0\n"
    # %*pb over nr_cpu_ids bits: hex, 32-bit chunks, first one as wide as its bits
    mask = (1 << ncpu) - 1
    chunks = [f"{(mask >> lo) & 0xffffffff:0{(min(32, ncpu - lo) + 3) // 4}x}"
              for lo in range(0, ncpu, 32)]
    assert read(tree, "devices/system/node/node0/cpumap") == ",".join(reversed(chunks)) + "\n"
    assert read(tree, "devices/system/node/node1/cpumap").strip("0,\n") == ""
    assert read(tree, "devices/system/node/node0/cpulist") == (
        "0\n" if ncpu == 1 else f"0-{ncpu - 1}\n")
    assert read(tree, "devices/system/node/node1/cpulist") == "\n"
    assert read(tree, "devices/system/node/node0/distance") == "10 20\n"
    assert read(tree, "devices/system/node/node1/distance") == "20 10\n"


def test_meminfo_is_node_read_meminfo(tree):
    kb = 1024
    total = 32 * MiB // kb
    used0 = (4 + 8) * MiB // kb
    want = dict.fromkeys(re.findall(r"Node %d (\S+):", NODE_MEMINFO_FMT), 0)
    want.update({"MemTotal": total, "MemFree": total - used0, "MemUsed": used0,
                 "Active": 4 * MiB // kb, "Active(anon)": 4 * MiB // kb,
                 "Unevictable": 8 * MiB // kb, "Mlocked": 8 * MiB // kb,
                 "AnonPages": used0, "AnonHugePages": 8 * MiB // kb})
    args = []
    for v in want.values():
        args += [0, v]
    assert read(tree, "devices/system/node/node0/meminfo") == NODE_MEMINFO_FMT % tuple(args)
    node1 = kv(re.sub(r"Node 1 |:| kB", "", read(tree, "devices/system/node/node1/meminfo")))
    assert node1["MemFree"] == node1["MemTotal"] == total and node1["AnonPages"] == 0


def test_numastat_counts_allocations_as_zone_statistics(tree):
    """One NUMA event per allocation (zone_statistics(..., 1)): 1024 small
    folios + 4 THPs at start on node0 (the CPUs' node: local); moving the THP
    tenant allocates 4 folios on node1 (other_node: no CPU there)."""
    s, _ = tree
    assert read(tree, "devices/system/node/node0/numastat") == NODE_NUMASTAT_FMT % (
        1028, 0, 0, 0, 1028, 0)
    assert read(tree, "devices/system/node/node1/numastat") == NODE_NUMASTAT_FMT % ((0,) * 6)
    trio.run(move_tenant, s, s.tenants[1], 1)
    assert read(tree, "devices/system/node/node1/numastat") == NODE_NUMASTAT_FMT % (
        4, 0, 0, 0, 0, 4)
    node1 = kv(read(tree, "devices/system/node/node1/vmstat"))
    assert node1["numa_hit"] == 4 and node1["numa_other"] == 4
    assert node1["nr_anon_transparent_hugepages"] == 4  # printed in THPs
    assert node1["nr_anon_pages"] == 2048


def test_node_vmstat_has_node_items_in_kernel_order_and_no_events(tree):
    keys = list(kv(read(tree, "devices/system/node/node0/vmstat")))
    first_event = VMSTAT_TEXT.index("nr_dirty_threshold")
    assert keys == VMSTAT_TEXT[:first_event]
    assert not any(k.startswith("compact_") for k in keys)


def test_proc_vmstat_migration_items_in_kernel_order(tree):
    s, _ = tree
    trio.run(move_tenant, s, s.tenants[1], 1)
    v = kv(read(tree, "proc/vmstat"))
    keys = list(v)
    assert keys == [k for k in VMSTAT_TEXT if k in v]  # kernel order
    assert [k for k in keys if k in MIGRATION_ITEMS] == MIGRATION_ITEMS  # all of them
    assert v["pgmigrate_success"] == 8 * MiB // 4096
    assert v["thp_migration_success"] == 4
    assert v["numa_pages_migrated"] == 0  # move_pages is no NUMA-balancing migration
    assert v["numa_hit"] == 1028 + 4


def test_node_files_show_every_change_before_the_read(tree):
    """The node files keep their text per measured usage (``System.reads``):
    a move's allocations and a caller's count (node_vmstat, as kswapd's
    demotion counts pgdemote_kswapd per node) are in the next read, and
    proc/vmstat sums the node's items."""
    s, _ = tree
    meminfo = read(tree, "devices/system/node/node1/meminfo")
    assert read(tree, "devices/system/node/node1/meminfo") == meminfo  # nothing moved
    vm = kv(read(tree, "proc/vmstat"))
    trio.run(move_tenant, s, s.tenants[1], 1)
    node1 = kv(re.sub(r"Node 1 |:| kB", "", read(tree, "devices/system/node/node1/meminfo")))
    assert node1["AnonPages"] == node1["AnonHugePages"] == node1["Mlocked"] == 8 * MiB // 1024
    s.node_vmstat["pgdemote_kswapd"][1] += 5
    assert kv(read(tree, "devices/system/node/node1/vmstat"))["pgdemote_kswapd"] == 5
    after = kv(read(tree, "proc/vmstat"))
    assert after["pgdemote_kswapd"] == vm["pgdemote_kswapd"] + 5
    assert after["pgmigrate_success"] == vm["pgmigrate_success"] + 8 * MiB // 4096


def test_numa_maps_counts_base_pages_with_kernelpagesize_4(tree):
    s, _ = tree
    for t, pages in ((s.tenants[0], 1024), (s.tenants[1], 2048)):
        text = read(tree, f"proc/{1000 + t.tid}/numa_maps")
        m = NUMA_MAP_RE.match(text)
        assert m, text
        assert m["kps"] == "4"  # vma_kernel_pagesize(): a THP is no hugetlb page
        assert " huge" not in text
        assert int(m["anon"]) == pages and m["nodes"] == f" N0={pages}"
    trio.run(move_tenant, s, s.tenants[1], 1)
    m = NUMA_MAP_RE.match(read(tree, "proc/1001/numa_maps"))
    assert m["nodes"] == " N1=2048"


def test_class_dma_in_use_is_the_client_count(tree):
    s, t = tree
    ch = s.dma.channels[0]
    rel = f"class/dma/{ch.name}/in_use"
    assert read(tree, rel) == "0\n"
    chans = s.dma.request_channels(1)
    assert read(tree, rel) == "1\n"
    s.dma.release_channels(chans)
    assert read(tree, rel) == "0\n"
    assert read(tree, f"class/dma/{ch.name}/memcpy_count") == "0\n"
