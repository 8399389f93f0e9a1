"""migd run against a real FUSE mount: file semantics, knobs, signals, config.

Every test starts the daemon as a subprocess (as systemd would, with a
NOTIFY_SOCKET the test listens on for READY=1) and uses plain file I/O on the
mounted tree, as cat and echo do.
"""

import errno
import os
import re
import signal
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import migd.daemon
from migd.sysfs import TREE_THREAD_NICE
from migd.sysfs._cread import NR_SLOTS

from .helpers import Daemon, cli, thread_nice


def all_files(root: Path):
    for dirpath, _, files in os.walk(root):
        for f in files:
            yield Path(dirpath, f).relative_to(root)


def test_every_readable_file_reads(daemon):
    seen = 0
    for rel in all_files(daemon.mount):
        mode = os.stat(daemon.p(str(rel))).st_mode
        assert stat.S_ISREG(mode)
        if not mode & 0o444 or rel.name == "trace_pipe":
            continue
        text = daemon.read(str(rel))
        # a CPU-less node's cpulist is just "\n", as node_read_cpumap prints it;
        # cmdline is argv, NUL-terminated, no newline (proc_pid_cmdline_read);
        # saved_cmdlines and set_event may be empty (a lone newline here)
        end = "\0" if rel.name == "cmdline" else "\n"
        assert text.endswith(end) and (len(text) > 1 or rel.name in (
            "cpulist", "saved_cmdlines", "set_event")), rel
        seen += 1
    assert seen > 40
    assert "[none] mtcopy dcbm" in daemon.read("kernel/mm/migrate_offload/migrator")
    deadline = time.monotonic() + 10  # the workloads start migrating at once
    while True:
        vmstat = dict(line.split() for line in daemon.read("proc/vmstat").splitlines())
        if int(vmstat["pgmigrate_success"]) > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert int(vmstat["pgmigrate_success"]) > 0


def _anon_mappings(pid: int) -> list[tuple[int, int]]:
    """(Size, Rss) in kB of each anonymous mapping of ``pid`` (/proc/PID/smaps)."""
    out, cur = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            cur = [0, 0] if len(head) == 5 else None  # no path: anonymous
            if cur is not None:
                out.append(cur)
        elif cur is not None and head[0] in ("Size:", "Rss:"):
            cur[head[0] == "Rss:"] = int(head[1])
    return [tuple(m) for m in out]


def test_the_arena_is_backed_once_the_daemon_serves(daemon):
    """The daemon starts without backing its memory's arena (a start would wait
    seconds of host faults on it) and backs every page of it once it serves
    (``_populate_arena``): an anonymous mapping at least as large as the nodes
    together ends with that much resident (the kernel may have merged a
    neighbour into it; left to first touch, the tenants' pages are a fraction)."""
    arena_kb = 2 * 64 * 1024  # DAEMON_CONFIG: two nodes of 64 MiB
    deadline = time.monotonic() + 60
    while True:
        held = [(size, rss) for size, rss in _anon_mappings(daemon.proc.pid) if size >= arena_kb]
        assert held, "no mapping as large as the arena"
        if any(rss >= arena_kb for _, rss in held) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert max(rss for _, rss in held) >= arena_kb, held


def test_stat_times_are_the_mount_time(daemon):
    st = os.stat(daemon.p("proc/vmstat"))
    assert 0 <= time.time() - st.st_mtime < 600 and st.st_mtime == st.st_ctime


def test_tree_threads_answer_before_the_copy_work(daemon):
    """Threads that served a read run at TREE_THREAD_NICE; the rest keep nice 0."""
    for _ in range(20):
        daemon.read("proc/vmstat")
    nice = thread_nice(daemon.proc.pid)
    assert nice.pop(daemon.proc.pid) == 0
    assert TREE_THREAD_NICE in nice.values() and 0 in nice.values()
    assert set(nice.values()) == {0, TREE_THREAD_NICE}


#: writable file -> values it must accept (each read back as shown)
VALID = {
    "module/dcbm/parameters/nr_dma_chan": [("16", "16"), ("1", "1"), ("4\n", "4")],
    "module/dcbm/parameters/reason_mask": [
        ("demotion,compaction", "compaction,demotion"), ("none", "none"),
        ("0x3", "compaction,memory_failure"), ("010", "syscall_or_cpuset"),  # kstrtoul: octal
        ("all", None)],
    "module/dcbm/parameters/batch_size": [("8192", "8192"), ("0", "0")],
    "module/dcbm/parameters/min_batch_pages": [("64", "64"), ("0", "0")],
    "kernel/cpu_mt/threads": [("64", "64"), ("2", "2")],
    "kernel/cpu_mt/reason_mask": [("numa_misplaced", "numa_misplaced"), ("all", None)],
    "kernel/mm/migrate_offload/nr_max_batched_migration": [
        ("262144", "262144"), ("1", "1"), ("512", "512")],
    "kernel/mm/migrate_offload/migrator": [
        ("mtcopy", "none [mtcopy] dcbm"), ("dcbm", "none mtcopy [dcbm]"),
        ("none", "[none] mtcopy dcbm")],
    "module/dcbm/parameters/offloading": [("1", "1"), ("0", "0")],
    "kernel/cpu_mt/offloading": [("1", "1"), ("0", "0")],
    "kernel/debug/fail_dma_desc/probability": [("10", "10"), ("0", "0")],
    "kernel/debug/fail_dma_desc/interval": [("3", "3"), ("1", "1")],
    "kernel/debug/fail_dma_desc/times": [("-1", "-1"), ("5", "5"), ("1", "1")],
    "kernel/tracing/events/migrate/enable": [("0", "0"), ("1", "1")],
    "kernel/tracing/events/enable": [("0", "0"), ("1", "1")],
    "kernel/tracing/events/migrate_offload/enable": [("0", "0"), ("1", "1")],
    "kernel/tracing/events/migrate/mm_migrate_pages/enable": [("0", "0"), ("1", "1")],
    "kernel/tracing/events/migrate/mm_migrate_pages_start/enable": [("0", "0"), ("1", "1")],
    "kernel/tracing/events/migrate_offload/migrate_offload_batch/enable": [("0", "0"),
                                                                          ("1", "1")],
    "kernel/tracing/events/migrate_offload/migrate_offload_clear/enable": [("0", "0"),
                                                                          ("1", "1")],
    "kernel/tracing/tracing_on": [("0", "0"), ("7", "1"), ("1", "1")],
    "kernel/tracing/trace_clock": [("boot", "[boot]")],
    "kernel/tracing/trace": [("\n", None)],
    "kernel/tracing/per_cpu/cpu0/trace": [("\n", None)],
    "kernel/tracing/current_tracer": [("nop", "nop")],
    "kernel/tracing/set_event": [
        ("migrate:mm_migrate_pages", "migrate:mm_migrate_pages"),
        ("*:*", "migrate:mm_migrate_pages_start\nmigrate:mm_migrate_pages\n"
                "migrate_offload:migrate_offload_batch\nmigrate_offload:migrate_offload_clear")],
    "kernel/mm/migrate_offload/max_inaccessible_us": [("500", "500"), ("0", "0")],
    "module/dcbm/parameters/auto": [("1", "1"), ("0", "0")],
    "kernel/cpu_mt/auto": [("1", "1"), ("0", "0")],
    # the newest dcbm's (variant EBUSY while offloading: written after it is 0)
    "module/dcbm/parameters/variant": [("v6", "v6"), ("newest\n", "newest")],
    "module/dcbm/parameters/cpu_warm": [("0", "N"), ("Y", "Y")],  # module_param(bool)
    "module/dcbm/parameters/util_gate": [("n", "N"), ("1", "Y")],
    "module/dcbm/parameters/cache_ctrl": [("off", "N"), ("on", "Y")],
    "module/dcbm/parameters/min_clear_bytes": [("4096", "4096"), ("2097152", "2097152")],
    "module/dcbm/parameters/max_inflight": [("1", "1"), ("32", "32")],
    "module/dcbm/parameters/sg_elems": [("8", "8"), ("32", "32")],
    "kernel/mm/prezero_pool/enabled": [("1", "1"), ("0", "0")],
    "kernel/mm/prezero_pool/max_per_node": [("8", "8"), ("256", "256")],
    "kernel/mm/migrate_offload/batch_copy": [("always", "always"), ("gated", "gated")],
    "kernel/mm/migrate_offload/decline_latency_sensitive": [("y", "1"), ("0", "0")],
    **{f"kernel/mm/migrate_offload/callers/{c}/{f}": v for c in (
        "promotion", "demotion", "compaction", "kcompactd", "direct_compaction",
        "move_pages", "damon") for f, v in (
        ("list_pages", [("512", "512"), ("0", "0")]),
        ("latency_tolerant", [("on", "1"), ("n", "0")]))},
}


def param_count(daemon, rel: str) -> float:
    """The count behind the counter file ``rel`` (module/MIGRATOR/parameters/NAME),
    as /metrics exports it: the migrator's own, which no write resets."""
    migrator, name = rel.split("/")[1], rel.rsplit("/", 1)[1]
    return next(s.value for f in text_string_to_metric_families(daemon.scrape())
                for s in f.samples if s.name == f"migd_migrator_param_{name}_total"
                and s.labels == {"migrator": migrator})


def test_every_writable_file_round_trips(daemon):
    writable = {str(r) for r in all_files(daemon.mount)
                if os.stat(daemon.p(str(r))).st_mode & 0o200}
    triggers = {w for w in writable if w.endswith(("/demote", "/migrate", "compact_memory"))}
    counters = {w for w in writable if w.endswith((
        "folios_migrated", "folios_failures", "batches_refused", "folios_cleared",
        "clear_failures", "folios_gated"))}
    faults = {w for w in writable if w.startswith("kernel/debug/")}
    cpus = {w for w in writable if re.search(r"/per_cpu/cpu[1-9]", w)}  # as cpu0's
    assert writable - triggers - counters - faults - cpus <= VALID.keys()
    for rel, values in VALID.items():
        for value, shown in values:
            daemon.write(rel, value)
            if shown is not None:
                assert daemon.read(rel) == shown + "\n", rel
    for rel in sorted(faults):  # every fault knob, restored to off
        daemon.write(rel, "0" if rel.endswith("probability") else "1")
    for rel in counters:  # any write resets the tree's view: it counts from the write on
        before = param_count(daemon, rel)
        daemon.write(rel, "1")
        assert 0 <= int(daemon.read(rel)) <= param_count(daemon, rel) - before, rel
    # Triggers: their effect shows in the counters (workloads keep moving pages
    # meanwhile, so where a page sits afterwards proves nothing).
    def vmstat() -> dict[str, int]:
        return {k: int(v) for k, v in (ln.split() for ln in daemon.read("proc/vmstat")
                                      .splitlines())}
    before = vmstat()
    daemon.write("proc/sys/vm/compact_memory", "1")
    after = vmstat()
    assert after["compact_migrate_scanned"] > before["compact_migrate_scanned"]
    daemon.write("devices/system/node/node0/demote", "64")
    daemon.write("proc/1000/migrate", "1")
    assert vmstat()["pgmigrate_success"] > after["pgmigrate_success"]
    assert "N1=" in daemon.read("proc/1000/numa_maps")


INVALID_FOR = {
    "module/dcbm/parameters/nr_dma_chan": ["0", "17", "x", "\n", "4 4", "-1"],
    "module/dcbm/parameters/reason_mask": ["bogus", "demotion,bogus", "0x400", "-1", " 3 ", "1_0",
                                           "0b11", "08", "demotion, compaction", "3\n\n"],
    "kernel/cpu_mt/threads": ["0", "65", "two"],
    "kernel/mm/migrate_offload/nr_max_batched_migration": ["0", "262145", "1e3"],
    "kernel/mm/migrate_offload/migrator": ["gpu", "\n", "cpu"],
    "module/dcbm/parameters/offloading": ["2", "true"],  # kstrtobool: "yes" is y
    "kernel/debug/fail_dma_desc/probability": ["101", "-1"],
    "kernel/debug/fail_dma_desc/interval": ["0"],
    "kernel/tracing/events/migrate/enable": ["2"],
    "kernel/tracing/events/migrate/mm_migrate_pages/enable": ["2", "-1", "x"],
    "kernel/tracing/tracing_on": ["-1", "on"],
    "kernel/tracing/trace_clock": ["local", "x86-tsc"],
    "kernel/tracing/current_tracer": ["function", "\n", "nope"],
    "kernel/mm/migrate_offload/max_inaccessible_us": ["-1", "10000001", "1ms"],
    "module/dcbm/parameters/auto": ["2", "o", " 1"],  # kstrtobool: "on" is true
    "proc/sys/vm/compact_memory": ["0", "2"],
    "devices/system/node/node0/demote": ["0", "x"],
    "proc/1000/migrate": ["2", "-1", "x"],
}


def test_invalid_writes_are_einval_and_change_nothing(daemon):
    for rel, bad in INVALID_FOR.items():
        before = daemon.read(rel) if os.stat(daemon.p(rel)).st_mode & 0o444 else None
        for value in bad:
            with pytest.raises(OSError) as e:
                daemon.write(rel, value)
            assert e.value.errno == errno.EINVAL, (rel, value)
            if before is not None:
                assert daemon.read(rel) == before, (rel, value)


_WRITABLE: list[str] = []


def writable_files(daemon) -> list[str]:
    if not _WRITABLE:
        _WRITABLE.extend(sorted(str(r) for r in all_files(daemon.mount)
                                if os.stat(daemon.p(str(r))).st_mode & 0o200))
    return _WRITABLE


def knob_state(daemon) -> dict[str, str]:
    """Every file that is both writable and readable, counters aside."""
    return {rel: daemon.read(rel) for rel in writable_files(daemon)
            if os.stat(daemon.p(rel)).st_mode & 0o444
            and not rel.endswith(("folios_migrated", "folios_failures", "/trace"))}


def _after_open(rel: str, state: dict[str, str]) -> dict[str, str]:
    """What opening ``rel`` with O_TRUNC changed: set_event's open disables
    every event (trace_events.c, ftrace_event_set_open -> ftrace_clear_events)."""
    if not rel.endswith("tracing/set_event"):
        return state
    return {k: "\n" if k == rel else "0\n" if k.startswith("kernel/tracing/events/")
            and k.endswith("/enable") else v for k, v in state.items()}


def restore(daemon, state: dict[str, str]) -> None:
    for rel, text in state.items():
        if daemon.read(rel) != text:
            if rel.endswith("/migrator"):  # shown as "[none] mtcopy dcbm"
                text = text[text.index("[") + 1:text.index("]")]
            daemon.write(rel, text)


# 400 examples in process (test_tree_model); through FUSE, enough to see the
# errno translation and a daemon that survives.
@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_arbitrary_bytes_to_any_writable_file_are_einval_and_change_nothing(daemon, data):
    """Fuzzing every writable file: a write is valid, or it fails with EINVAL
    (EBUSY for an offloading conflict) and no knob anywhere changed."""
    rel = data.draw(st.sampled_from(writable_files(daemon)), label="file")
    payload = data.draw(st.one_of(
        st.binary(max_size=40),
        st.text(alphabet="0123456789-+x ,\n\tabcdefnoY", max_size=12).map(str.encode)),
        label="bytes")
    before = knob_state(daemon)
    try:
        daemon.write(rel, payload)
    except OSError as e:
        assert e.errno in (errno.EINVAL, errno.EBUSY), (rel, payload, e)
        assert knob_state(daemon) == _after_open(rel, before), (rel, payload)
    finally:
        restore(daemon, before)
    assert daemon.proc.poll() is None


# lib/kstrtox.c written as grammars (not as migd's parser): base 0 is 0x + hex
# digits, 0 + octal digits, or decimal; one optional sign (kstrtoull: "+"
# only); one optional newline; the buffer ends at its first NUL.
_KSTRTOULL = re.compile(rb"\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\n?\Z")
_KSTRTOLL = re.compile(rb"([-+]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\n?\Z")
_KSTRTOBOOL = re.compile(rb"([yY1]|[oO][nN])|([nN0]|[oO][fF])")  # a prefix match
KSTRTOX_FILES = {  # file: (grammar, lo, hi) of its store
    "kernel/mm/migrate_offload/nr_max_batched_migration": (_KSTRTOULL, 1, 262144),
    "module/dcbm/parameters/nr_dma_chan": (_KSTRTOULL, 1, 16),
    "kernel/debug/fail_migrate_alloc/times": (_KSTRTOLL, -1, 2**31 - 1),
    "kernel/cpu_mt/auto": (_KSTRTOBOOL, 0, 1),
}


def _kernel_value(grammar, payload: bytes):
    s = payload.split(b"\0", 1)[0]
    m = grammar.match(s)
    if m is None:
        return None
    if grammar is _KSTRTOBOOL:
        return int(m.group(1) is not None)
    digits = m.group(m.lastindex).decode()
    value = (int(digits, 16) if digits[:2].lower() == "0x"
             else int(digits, 8) if digits.startswith("0") else int(digits))
    return -value if grammar is _KSTRTOLL and m.group(1) == b"-" else value


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_numbers_and_booleans_parse_as_kstrtox(daemon, data):
    """Writes shaped like numbers: accepted exactly when the kernel's rules
    accept them and the value is in the knob's range; then read back."""
    rel = data.draw(st.sampled_from(sorted(KSTRTOX_FILES)), label="file")
    grammar, lo, hi = KSTRTOX_FILES[rel]
    payload = b"".join([
        data.draw(st.sampled_from([b"", b"+", b"-", b"++", b" ", b"\t"]), label="sign"),
        data.draw(st.sampled_from([b"", b"0", b"0x", b"0X", b"o"]), label="prefix"),
        data.draw(st.text("0123456789abcdefxXyYnNoO", max_size=8).map(str.encode),
                  label="digits"),
        data.draw(st.sampled_from([b"", b"\n", b"\n\n", b" ", b"\0z", b"\r\n", b"\n1"]),
                  label="suffix")])
    want = _kernel_value(grammar, payload)
    ok = want is not None and lo <= want <= hi
    before = knob_state(daemon)
    try:
        daemon.write(rel, payload)
        if not payload:  # a write of 0 bytes never reaches a store, as on sysfs
            assert knob_state(daemon) == before
            return
        assert ok, (rel, payload, "accepted")
        assert int(daemon.read(rel)) == want, (rel, payload)
    except OSError as e:
        assert not ok and e.errno == errno.EINVAL, (rel, payload, e)
        assert knob_state(daemon) == before, (rel, payload)
    finally:
        restore(daemon, before)


def test_read_only_files_are_eacces_and_the_shape_is_eperm(daemon):
    for rel in ("proc/vmstat", "class/dma/dma0chan0/memcpy_count",
                "devices/system/node/node0/meminfo", "kernel/mm/migrate_offload/profile",
                "proc/1000/numa_maps"):
        with pytest.raises(PermissionError) as e:
            daemon.write(rel, "1")
        assert e.value.errno == errno.EACCES
    for op in (lambda: os.mkdir(daemon.p("kernel/new")),
               lambda: os.unlink(daemon.p("proc/vmstat")),
               lambda: os.rename(daemon.p("proc/vmstat"), daemon.p("proc/vmstat2")),
               lambda: open(daemon.p("proc/newfile"), "w")):  # noqa: SIM115
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    with pytest.raises(FileNotFoundError):
        daemon.read("no/such/file")


def test_dcbm_offloading_while_mtcopy_is_active_is_ebusy(daemon):
    daemon.write("kernel/cpu_mt/offloading", "1")
    try:
        with pytest.raises(OSError) as e:
            daemon.write("module/dcbm/parameters/offloading", "1")
        assert e.value.errno == errno.EBUSY
        assert daemon.read("kernel/mm/migrate_offload/migrator") == "none [mtcopy] dcbm\n"
    finally:
        daemon.write("kernel/cpu_mt/offloading", "0")


@pytest.mark.slow
def test_migrator_switches_under_load_lose_nothing_then_sigterm(tmp_path):
    d = Daemon(tmp_path)
    try:
        d.wait_ready()
        d.write("kernel/mm/migrate_offload/nr_max_batched_migration", "64")
        for name in ("dcbm", "mtcopy", "none", "dcbm", "none", "mtcopy") * 3:
            d.write("kernel/mm/migrate_offload/migrator", name)
            time.sleep(0.05)
        d.write("kernel/mm/migrate_offload/migrator", "none")
        d.write("module/dcbm/parameters/offloading", "1")
        time.sleep(0.3)  # heavy migration in flight
        assert d.stop(signal.SIGTERM, timeout=60) == 0  # 60 s: a hang, not a slow stop
        assert not os.path.ismount(d.mount)
        ev = d.events()
        stopped = [e for e in ev if e["event"] == "stopped"][-1]
        assert stopped["integrity_ok"] is True and stopped["corrupt_pages"] == 0
        switches = [e for e in ev if e["event"] == "migrator_switched"]
        assert len(switches) >= 12
        knobs = [e for e in ev if e["event"] == "knob_changed"]
        assert {"knob": "nr_max_batched_migration", "old": 512, "new": 64}.items() <= \
            knobs[0].items()
        assert [e["event"] for e in ev][:2] == ["starting", "ready"]
    finally:
        d.close()


@pytest.mark.slow
def test_sigkill_leaves_a_stale_mount_that_the_next_start_clears(tmp_path):
    d = Daemon(tmp_path)
    try:
        d.wait_ready()
        d.proc.kill()
        d.proc.wait(30)
        with pytest.raises(OSError) as e:
            os.listdir(d.mount)
        assert e.value.errno == errno.ENOTCONN  # "Transport endpoint is not connected"
    finally:
        d.sock.close()
        d.log.close()
    d2 = Daemon.__new__(Daemon)
    (tmp_path / "notify.sock").unlink()
    Daemon.__init__(d2, tmp_path)
    try:
        d2.wait_ready()
        assert "[none]" in d2.read("kernel/mm/migrate_offload/migrator")
        assert any(e["event"] == "stale_mount_cleared" for e in d2.events())
        assert d2.stop() == 0
    finally:
        d2.close()


@pytest.mark.parametrize("text, key", [  # every key's message: test_config, in process
    ("[migrator.dcbm]\nnr_dma_chan = 99\n", "migrator.dcbm.nr_dma_chan"),
])
def test_bad_config_fails_start_naming_the_key(tmp_path, capsys, monkeypatch, text, key):
    """In process: refused before the daemon starts (nothing mounted)."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    monkeypatch.setattr(migd.daemon, "run_daemon", lambda *a: pytest.fail("the daemon ran"))
    code, err = cli(capsys, "run", "--config", str(cfg), "--mount", str(tmp_path / "m"))
    assert code == 2
    assert key in err and len(err.strip().splitlines()) == 1
    assert not os.path.ismount(tmp_path / "m")


_KNOB = "kernel/mm/migrate_offload/nr_max_batched_migration"
#: Files whose value does not change while the daemon runs untouched.
_STATIC = ("kernel/tracing/events/migrate/mm_migrate_pages/format",
           "kernel/tracing/events/header_page", "kernel/tracing/available_events",
           "devices/system/node/online", "kernel/mm/migrate_offload/nr_max_batched_migration")


def test_a_read_at_offset_zero_shows_the_value_again(daemon):
    """sysfs runs show() at a file's first read and again for a read from
    position 0 (seq_read_iter() restarts at 0): an open file kept and read
    with pread(fd, n, 0), as monitoring agents do, sees every store made
    since its open, the first read too."""
    before = daemon.p(_KNOB).read_bytes()
    fd = os.open(daemon.p(_KNOB), os.O_RDONLY)
    try:
        daemon.write(_KNOB, str(int(before) // 4))  # after the open, before any read
        assert os.pread(fd, 4096, 0) == b"%d\n" % (int(before) // 4)
        daemon.write(_KNOB, str(int(before) // 2))
        assert os.pread(fd, 4096, 0) == b"%d\n" % (int(before) // 2)
        daemon.write(_KNOB, before)
        assert os.pread(fd, 4096, 0) == before
        assert os.pread(fd, 4096, 1) == before[1:]
    finally:
        os.close(fd)
        daemon.write(_KNOB, before)


def test_reads_of_any_size_from_more_open_files_than_slots(daemon):
    """More files open at once than the read path has slots (the rest get
    records of their own), read 7 bytes at a time and then whole, twice
    over (the first round's records freed and taken again): every read is
    the file's bytes at that offset."""
    whole = {f: daemon.p(f).read_bytes() for f in _STATIC}
    assert all(whole.values())
    per_file = NR_SLOTS // len(_STATIC) + 20
    for _ in range(2):
        fds = [(f, os.open(daemon.p(f), os.O_RDONLY)) for f in _STATIC for _ in range(per_file)]
        assert len(fds) > NR_SLOTS
        try:
            for f, fd in fds:
                parts = [os.read(fd, 7)]
                while parts[-1]:
                    parts.append(os.read(fd, 7))
                assert b"".join(parts) == whole[f], f
            for f, fd in fds[::37]:
                assert os.pread(fd, 1 << 20, 3) == whole[f][3:]
        finally:
            for _, fd in fds:
                os.close(fd)
    assert daemon.proc.poll() is None
