"""The control tree's files, bound to a :class:`System` (SPEC section 5).

Each entry is an Attribute: ``show`` reads state (from any thread), ``store``
validates and then changes it (in the trio thread).  Paths mirror the kernel's
where one exists.
"""

from __future__ import annotations

from ..faults import FaultInjector
from ..migrate import MAX_INACCESSIBLE_US_LIMIT, NR_MAX_BATCHED_MIGRATION_LIMIT
from ..mm import format_reason_mask
from ..offload import DCBM_MAX_CHANNELS, MTCOPY_MAX_THREADS
from ..sysfs import Attribute, SysfsTree
from ._nodefs import add_node_files
from ._system import TENANT_PID_BASE, System, parse_bool, parse_int
from ._tracefs import add_tracefs
from ._workloads import compact_all, demote_node, move_tenant


def build_tree(sys: System) -> SysfsTree:
    tree = SysfsTree()
    add = tree.add
    eng = sys.engine

    # module/dcbm/parameters
    dcbm = "module/dcbm/parameters"
    add(f"{dcbm}/offloading", Attribute(
        lambda: str(int(sys.active_migrator() == "dcbm")),
        lambda v: sys.set_offloading("dcbm", parse_bool(v, "offloading"))))
    add(f"{dcbm}/nr_dma_chan", Attribute(lambda: str(sys.dcbm.nr_dma_chan),
                                         lambda v: _set_nr_dma_chan(sys, v)))
    add(f"{dcbm}/reason_mask", Attribute(lambda: format_reason_mask(sys.reason_masks["dcbm"]),
                                         lambda v: sys.set_reason_mask("dcbm", v)))
    for counter in ("folios_migrated", "folios_failures"):
        add(f"{dcbm}/{counter}", Attribute(
            lambda c=counter: str(getattr(sys.dcbm, c) - sys.dcbm_counter_base[c]),
            lambda v, c=counter: _reset_view(sys, c)))
    add(f"{dcbm}/batches_refused", Attribute(lambda: str(sys.dma.batches_refused)))
    for knob in ("batch_size", "min_batch_pages"):
        add(f"{dcbm}/{knob}", Attribute(
            lambda k=knob: str(getattr(sys.dcbm, k)),
            lambda v, k=knob: _set_attr(sys, sys.dcbm, k, v, 0,
                                        NR_MAX_BATCHED_MIGRATION_LIMIT, f"dcbm.{k}")))

    for path, m in ((f"{dcbm}/auto", sys.dcbm), ("kernel/cpu_mt/auto", sys.mtcopy)):
        add(path, Attribute(lambda m=m: str(int(m.auto)),
                            lambda v, m=m: _set_auto(sys, m, v)))

    # kernel/cpu_mt: the multi-threaded copy migrator
    add("kernel/cpu_mt/offloading", Attribute(
        lambda: str(int(sys.active_migrator() == "mtcopy")),
        lambda v: sys.set_offloading("mtcopy", parse_bool(v, "offloading"))))
    add("kernel/cpu_mt/threads", Attribute(lambda: str(sys.mtcopy.threads),
                                           lambda v: _set_threads(sys, v)))
    add("kernel/cpu_mt/reason_mask", Attribute(
        lambda: format_reason_mask(sys.reason_masks["mtcopy"]),
        lambda v: sys.set_reason_mask("mtcopy", v)))

    # kernel/mm/migrate_offload
    mo = "kernel/mm/migrate_offload"
    add(f"{mo}/migrator", Attribute(lambda: _migrator_list(sys),
                                    lambda v: sys.set_migrator(v.strip())))
    add(f"{mo}/nr_max_batched_migration", Attribute(
        lambda: str(eng.nr_max_batched_migration),
        lambda v: _set_attr(sys, eng, "nr_max_batched_migration", v, 1,
                            NR_MAX_BATCHED_MIGRATION_LIMIT, "nr_max_batched_migration")))
    add(f"{mo}/max_inaccessible_us", Attribute(
        lambda: str(eng.max_inaccessible_us),
        lambda v: _set_attr(sys, eng, "max_inaccessible_us", v, 0,
                            MAX_INACCESSIBLE_US_LIMIT, "max_inaccessible_us")))
    add(f"{mo}/profile", Attribute(lambda: sys.profile.name))

    # class/dma
    for ch in sys.dma.channels:
        for f in ("memcpy_count", "bytes_transferred"):
            add(f"class/dma/{ch.name}/{f}", Attribute(lambda c=ch, f=f: str(getattr(c, f))))
        add(f"class/dma/{ch.name}/in_use", Attribute(lambda c=ch: str(int(c.in_use))))

    # devices/system/node
    for node in sys.machine.memory.nodes:
        base = f"devices/system/node/node{node.nid}"
        if node.demotion_target is not None:
            add(f"{base}/demote", Attribute(
                None, lambda v, n=node: demote_node(
                    sys, n.nid, parse_int(v, 1, n.nr_pages, "demote (pages)"))))

    add_node_files(add, sys)  # node dirs, proc/vmstat, numa_maps: kernel formats

    # proc
    add("proc/sys/vm/compact_memory", Attribute(
        None, lambda v: _compact(sys, v)))
    for t in sys.tenants:
        pid = TENANT_PID_BASE + t.tid
        add(f"proc/{pid}/comm", Attribute(lambda t=t: t.name))
        add(f"proc/{pid}/migrate", Attribute(
            None, lambda v, t=t: move_tenant(
                sys, t, parse_int(v, 0, len(sys.machine.memory.nodes) - 1, "migrate (node)"))))

    # kernel/debug/fail_*
    for name in FaultInjector.POINTS:
        attr = sys.faults[name]
        for knob, lo, hi in (("probability", 0, 100), ("interval", 1, 2**31 - 1),
                             ("times", -1, 2**31 - 1)):
            add(f"kernel/debug/{name}/{knob}", Attribute(
                lambda a=attr, k=knob: str(getattr(a, k)),
                lambda v, a=attr, k=knob, lo=lo, hi=hi: _set_fault(sys, a, k, v, lo, hi)))

    add_tracefs(add, sys)
    return tree


def _migrator_list(sys: System) -> str:
    active = sys.active_migrator()
    return " ".join(f"[{n}]" if n == active else n for n in ("none", "mtcopy", "dcbm"))


def _set_attr(sys: System, obj, name: str, text: str, lo: int, hi: int, knob: str) -> None:
    value = parse_int(text, lo, hi, knob)
    old = getattr(obj, name)
    setattr(obj, name, value)
    sys._knob(knob, old, value)


def _set_auto(sys: System, migrator, text: str) -> None:
    value = parse_bool(text, "auto")
    old = migrator.auto
    migrator.auto = value
    sys._knob(f"{migrator.name}.auto", old, value)


def _set_nr_dma_chan(sys: System, text: str) -> None:
    value = parse_int(text, 1, DCBM_MAX_CHANNELS, "nr_dma_chan")
    old = sys.dcbm.nr_dma_chan
    sys.dcbm.set_nr_dma_chan(value)
    sys._knob("dcbm.nr_dma_chan", old, value)


def _set_threads(sys: System, text: str) -> None:
    value = parse_int(text, 1, MTCOPY_MAX_THREADS, "threads")
    old = sys.mtcopy.threads
    sys.mtcopy.set_threads(value)
    sys._knob("mtcopy.threads", old, value)


def _reset_view(sys: System, counter: str) -> None:
    old = getattr(sys.dcbm, counter) - sys.dcbm_counter_base[counter]
    sys.dcbm_counter_base[counter] = getattr(sys.dcbm, counter)
    sys._knob(f"dcbm.{counter}", old, 0)


def _set_fault(sys: System, attr, knob: str, text: str, lo: int, hi: int) -> None:
    value = parse_int(text, lo, hi, f"{attr.name}/{knob}")
    old = getattr(attr, knob)
    attr.set(**{knob: value})
    sys._knob(f"{attr.name}.{knob}", old, value)


async def _compact(sys: System, text: str) -> None:
    if parse_int(text, 1, 1, "compact_memory") == 1:
        await compact_all(sys)
