"""The control tree as a model, in process: ``build_tree(System(load_config(text)))``.

No FUSE here (test_daemon mounts the real tree): the same stores and shows,
driven through :meth:`SysfsTree.write` and :meth:`SysfsTree.read`, so every rule
of SPEC section 5 is checked in milliseconds.  Ranges come from SPEC's table.
"""

import ctypes
import errno
import subprocess
import sys

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migd.daemon import System, build_tree, load_config
from migd.daemon.reference import stale
from migd.sysfs import SysfsTree
from migd.sysfs._cread import DATA, HELD, IN_SLOT, KIND, NR_SLOTS, PYTHON, SLOT_BYTES, Records

from .helpers import BARE, config

CONFIG = config("16M", [{"name": "small", "size": "2M"},
                         {"name": "huge", "size": "4M", "order": 9}], **BARE)

#: SPEC section 5: file -> the range it accepts.
SPEC_RANGES = {
    "module/dcbm/parameters/nr_dma_chan": (1, 16),
    "kernel/cpu_mt/threads": (1, 64),
    "kernel/mm/migrate_offload/nr_max_batched_migration": (1, 262144),
    "kernel/debug/fail_dma_desc/probability": (0, 100),
}


def model(text: str = CONFIG) -> tuple[System, SysfsTree]:
    sys = System(load_config(text=text))
    return sys, build_tree(sys)


def readable(tree: SysfsTree) -> list[str]:
    return [p for p in tree.files() if tree.attribute(p).show is not None]


def state(tree: SysfsTree) -> dict[str, bytes]:
    """Every tunable's value (status files move on their own: left out)."""
    return {p: tree.read(p) for p in readable(tree) if tree.attribute(p).store is not None}


async def einval(tree: SysfsTree, path: str, text: str) -> None:
    with pytest.raises(OSError) as e:
        await tree.write(path, text.encode())
    assert e.value.errno == errno.EINVAL, (path, text)


def test_every_readable_file_reads_a_whole_line():
    sys, tree = model()
    paths = readable(tree)
    assert len(paths) > 40
    for p in paths:
        text = tree.read(p)
        # node_read_cpulist prints "%*pbl\n": an empty line for a CPU-less node;
        # cmdline is argv, NUL-terminated, no newline (proc_pid_cmdline_read);
        # saved_cmdlines is empty (a lone newline here) until an event is recorded
        end = b"\0" if p.endswith("/cmdline") else b"\n"
        assert text.endswith(end) and (len(text) > 1 or p.endswith(("cpulist",
                                                                    "saved_cmdlines"))), p
    assert tree.read("kernel/mm/migrate_offload/migrator") == b"[none] mtcopy dcbm\n"
    assert tree.read("proc/1000/comm") == b"small\n"
    assert tree.read("proc/1000/cmdline") == b"small\0"
    assert tree.read("proc/1000/status").startswith(b"Name:\tsmall\nUmask:\t0022\nState:\t")


async def test_spec_ranges_hold_at_both_ends_and_nothing_changes_outside():
    sys, tree = model()
    for path, (lo, hi) in SPEC_RANGES.items():
        for v in (lo, hi):
            await tree.write(path, f"{v}\n".encode())
            assert tree.read(path) == f"{v}\n".encode()
        before = state(tree)
        for bad in (str(lo - 1), str(hi + 1), "x", "", "\n", f"{lo} {lo}", "1e3"):
            await einval(tree, path, bad)
        assert state(tree) == before, path


async def test_writing_back_what_a_file_shows_changes_nothing():
    """sysfs idempotence: every tunable accepts its own shown value (the migrator
    list and trace_clock show brackets, counters and the trace ring reset: aside)."""
    sys, tree = model()
    before = state(tree)
    for path, text in before.items():
        if path.endswith(("/migrator", "/trace_clock", "/trace", "folios_migrated",
                          "folios_failures")):
            continue
        await tree.write(path, text)
    assert state(tree) == before


async def test_a_knob_change_emits_old_and_new_and_a_rejected_one_nothing():
    sys, tree = model()
    events = []
    sys.events.append(lambda ev, f: events.append((ev, f)))
    await tree.write("kernel/mm/migrate_offload/nr_max_batched_migration", b"64")
    await einval(tree, "kernel/mm/migrate_offload/nr_max_batched_migration", "0")
    await tree.write("module/dcbm/parameters/reason_mask", b"demotion,compaction")
    await tree.write("kernel/debug/fail_dma_busy/times", b"-1")
    assert events == [
        ("knob_changed", {"knob": "nr_max_batched_migration", "old": 512, "new": 64}),
        ("knob_changed", {"knob": "dcbm.reason_mask", "old": "compaction,memory_failure,"
                          "memory_hotplug,syscall_or_cpuset,mempolicy_mbind,numa_misplaced,"
                          "contig_range,longterm_pin,demotion,damon",
                          "new": "compaction,demotion"}),
        ("knob_changed", {"knob": "fail_dma_busy.times", "old": 1, "new": -1})]
    assert sys.engine.nr_max_batched_migration == 64


async def test_switching_migrators_and_ebusy_for_a_second_one():
    sys, tree = model()
    await tree.write("kernel/mm/migrate_offload/migrator", b"mtcopy\n")
    assert tree.read("kernel/mm/migrate_offload/migrator") == b"none [mtcopy] dcbm\n"
    assert tree.read("kernel/cpu_mt/offloading") == b"1\n"
    with pytest.raises(OSError) as e:
        await tree.write("module/dcbm/parameters/offloading", b"1")
    assert e.value.errno == errno.EBUSY
    await tree.write("kernel/cpu_mt/offloading", b"0")
    assert sys.active_migrator() == "none"
    for bad in ("gpu", "cpu", "\n"):
        await einval(tree, "kernel/mm/migrate_offload/migrator", bad)


def test_config_values_are_what_the_tree_shows():
    sys, tree = model(CONFIG + """
[migrator]
nr_max_batched_migration = 2048
max_inaccessible_us = 300
[migrator.dcbm]
nr_dma_chan = 8
reason_mask = "demotion"
batch_size = 1024
auto = true
[migrator.mtcopy]
threads = 3
""")
    for path, shown in (("module/dcbm/parameters/nr_dma_chan", "8"),
                        ("module/dcbm/parameters/reason_mask", "demotion"),
                        ("module/dcbm/parameters/batch_size", "1024"),
                        ("module/dcbm/parameters/auto", "1"),
                        ("kernel/cpu_mt/threads", "3"),
                        ("kernel/cpu_mt/auto", "0"),
                        ("kernel/mm/migrate_offload/nr_max_batched_migration", "2048"),
                        ("kernel/mm/migrate_offload/max_inaccessible_us", "300")):
        assert tree.read(path) == f"{shown}\n".encode(), path


async def test_read_only_is_eacces_write_only_too_and_unknown_enoent():
    sys, tree = model()
    for path in ("proc/vmstat", "class/dma/dma0chan0/memcpy_count",
                 "kernel/mm/migrate_offload/profile", "proc/1000/numa_maps"):
        with pytest.raises(OSError) as e:
            await tree.write(path, b"1")
        assert e.value.errno == errno.EACCES, path
    with pytest.raises(OSError) as e:
        tree.read("proc/sys/vm/compact_memory")
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        tree.read("no/such/file")
    assert e.value.errno == errno.ENOENT
    assert "demote" not in tree.listdir("devices/system/node/node1")  # no demotion target


def vmstat(tree: SysfsTree) -> dict[str, int]:
    lines = tree.read("proc/vmstat").decode().splitlines()
    return {k: int(v) for k, v in (ln.split() for ln in lines)}


async def test_triggers_start_their_migrations():
    sys, tree = model()
    await tree.write("proc/1000/migrate", b"1")
    assert b" N1=512 " in tree.read("proc/1000/numa_maps")  # 2 MiB of 4 KiB pages
    moved = vmstat(tree)["pgmigrate_success"]
    assert moved == 512
    await tree.write("devices/system/node/node0/demote", b"512")
    assert vmstat(tree)["pgmigrate_success"] > moved
    await tree.write("proc/sys/vm/compact_memory", b"1")
    assert vmstat(tree)["compact_migrate_scanned"] > 0
    for path, bad in (("proc/1000/migrate", "2"), ("proc/1000/migrate", "-1"),
                      ("devices/system/node/node0/demote", "0"),
                      ("proc/sys/vm/compact_memory", "0")):
        await einval(tree, path, bad)


_FUZZ = model()
_WRITABLE = sorted(p for p in _FUZZ[1].files() if _FUZZ[1].attribute(p).store is not None)


def restore(tree: SysfsTree, before: dict[str, bytes]) -> None:
    for path, text in before.items():
        if tree.read(path) != text and not path.endswith(("folios_migrated", "folios_failures")):
            if path.endswith("/migrator"):  # shown as "[none] mtcopy dcbm"
                text = text[text.index(b"[") + 1:text.index(b"]")]
            trio.run(tree.write, path, text)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_arbitrary_bytes_to_any_writable_file_are_einval_and_change_nothing(data):
    """Every writable file: a write is valid, or it fails with EINVAL (EBUSY for an
    offloading conflict) and no tunable anywhere changed."""
    sys, tree = _FUZZ
    path = data.draw(st.sampled_from(_WRITABLE), label="file")
    payload = data.draw(st.one_of(
        st.binary(max_size=40),
        st.text(alphabet="0123456789-+x ,\n\tabcdefnoY", max_size=12).map(str.encode)),
        label="bytes")
    before = state(tree)
    try:
        trio.run(tree.write, path, payload)
    except OSError as e:
        assert e.errno in (errno.EINVAL, errno.EBUSY), (path, payload, e)
        assert state(tree) == before, (path, payload)
    finally:
        restore(tree, before)


def test_the_readme_table_is_generated_from_the_knob_table():
    assert not stale(), "run: python -m migd.daemon.reference"


def test_records_keep_each_value_until_released_and_free_every_one():
    """The records in process: a small value in its row's slot, a large one
    held, a stream's left to Python, a record of its own once every row is
    taken; each publishes its value; a value shown again is a new buffer;
    releasing (as the compiled release does for a slotted record, Python for
    the rest) frees them all."""
    records = Records()
    rng = np.random.default_rng(1)
    values = [rng.bytes(int(n)) for n in rng.integers(1, 3 * SLOT_BYTES, NR_SLOTS + 40)]
    fhs = [records.open(v) for v in values] + [records.open(None)]
    kinds = []
    for fh, value in zip(fhs, values, strict=False):
        rec, slot = records.record(fh)
        kinds.append(int(rec[KIND]))
        assert records.value(fh) == value
        assert rec[KIND] == (IN_SLOT if slot >= 0 and len(value) <= SLOT_BYTES else HELD)
    assert records.record(fhs[-1])[0][KIND] == PYTHON
    assert {IN_SLOT, HELD} <= set(kinds) and records.in_use() == len(fhs)
    before = int(records.record(fhs[0])[0][DATA])
    records.refill(fhs[0], b"x" * 7)  # a value shown again: published anew
    assert records.value(fhs[0]) == b"x" * 7 and records.record(fhs[0])[0][DATA] != before
    assert ctypes.string_at(before + 8, len(values[0])) == values[0]  # the old one kept
    for fh in fhs:
        rec, _ = records.record(fh)
        if rec[KIND] == IN_SLOT:
            rec[KIND] = 0  # what the compiled release does
        else:
            records.release(fh)
    assert records.in_use() == 0


_CONCURRENT_READ = r"""
import ctypes
import threading
import numpy as np
from numba import njit
from migd._ccall import call5_int
from migd.sysfs._cread import Records, compiled_ops

@njit(nogil=True)
def reads(fn, fi, buf, at, want, rounds):
    # compiled reads in a loop without the GIL: each must be one value's bytes
    bad = 0
    for _ in range(rounds):
        k = call5_int(fn, 0, buf.ctypes.data, buf.size, at, fi)
        first = buf[0]
        bad += k != want or (first != 97 and first != 98) or np.any(buf[:want] != first)
    return bad

fn = compiled_ops()["read"]
records = Records()  # reads at offsets > 0: Python is never called
fi = np.zeros(5, dtype=np.uint64)
for n, at in ((4000, 100), (1 << 20, 4096)):  # a value in its slot, a held one
    fh = records.open(b"a" * n)
    fi[3] = fh  # fuse_file_info.fh (byte 24)
    buf = np.empty(1 << 17, dtype=np.uint8)
    want = min(n - at, buf.size)
    reads(fn, fi.ctypes.data, buf, at, want, 10)  # compiled before the race
    out = []
    t = threading.Thread(target=lambda: out.append(reads(fn, fi.ctypes.data, buf, at, want,
                                                          20000)))
    t.start()
    i = 0
    while t.is_alive():
        records.refill(fh, (b"b" if i % 2 else b"a") * n)  # another thread's read at 0
        i += 1
    t.join()
    print(out[0], i > 10)
records.deactivate()
read = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                        ctypes.c_int64, ctypes.c_void_p)(fn)
print(read(None, ctypes.create_string_buffer(8), 8, 0, fi.ctypes.data))
"""


def test_a_compiled_read_never_sees_a_value_change_under_it():
    """Two threads reading one open file (FUSE does not serialise them): one
    showing the value again at offset 0 while the other's compiled read
    copies from further on, for a value in its slot and a held one.  Every
    read is one whole value's bytes, never a mix or freed memory (a refill
    that rewrote the slot in place, or dropped the published value, gave
    mixed reads or a crash); after deactivate() a read is ENODEV.  In a
    child: a failure here may be a crash."""
    r = subprocess.run([sys.executable, "-c", _CONCURRENT_READ], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["0", "True", "0", "True", str(-errno.ENODEV)], r.stdout


def test_the_compiled_lookup_finds_every_node_and_nothing_else():
    """The compiled getattr's path table (FNV-1a, open addressing): every
    path of the daemon's tree finds its own node, whatever it collided with;
    a prefix, a trailing slash, a doubled slash or an unknown name finds none."""
    from numba import njit

    from migd.sysfs._ccallbacks import _as_pointer, _lookup
    from migd.sysfs._cread import Nodes

    @njit
    def lookup(addr, header):
        return _lookup(_as_pointer(addr), header)

    def find(path: str) -> int:
        buf = ctypes.create_string_buffer(path.encode())
        return lookup(ctypes.addressof(buf), nodes.header)

    tree = build_tree(System(load_config(text=config())))
    paths = ["/", *(f"/{p}" for p in tree.files())]
    paths += sorted({p.rsplit("/", 1)[0] for p in paths[1:] if p.count("/") > 1})
    nodes = Nodes(paths, 0)
    assert len(nodes.slots) < 4 * len(paths)  # dense enough that some probe further
    for i, p in enumerate(paths):
        assert find(p) == i, p
    for p in ("/kerne", "/kernel/", "//kernel", "/kernel/mm/nope", "", "/x" * 300):
        assert find(p) == -1, p


def test_records_start_clean_keep_few_old_values_and_take_the_generation_given(monkeypatch):
    """A row's next file inherits nothing (a view's FRESH made a read-write
    file's re-reads skip Python); a value shown again and again keeps only
    the buffers replaced within RETIRED_FOR; the generation is the one taken
    before the value was shown (a store in between makes the first read ask
    again)."""
    from migd.sysfs import _cread

    records = Records()
    views = [records.open(b"trace", fixed=True) for _ in range(NR_SLOTS)]
    for fh in views:
        records.release(fh)
    fhs = [records.open(None) for _ in range(NR_SLOTS)]
    assert all(records.record(fh)[0][_cread.FRESH] == 0 for fh in fhs)
    assert all(records.record(fh)[0][DATA] == 0 for fh in fhs)
    monkeypatch.setattr(_cread, "RETIRED_FOR", 0.0)
    for i in range(1000):
        records.refill(fhs[0], b"%d\n" % i)
    assert len(records._held[fhs[0]]) == 1 and records.value(fhs[0]) == b"999\n"
    gen = records.generation()
    records.stored()
    rec, _ = records.record(records.open(b"old", gen=gen))
    assert rec[_cread.GEN] == gen != records.shared[_cread.GENERATION]
