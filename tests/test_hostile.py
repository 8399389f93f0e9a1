"""Nothing a user does can wedge migd: an interruptible ``trace_pipe``, a root-only
tracefs, stores sized as kernfs sizes them, signals, an unmount from outside, a
shutdown under writes.  Every access to the tree is a child process's, as a user's.
"""

import ctypes
import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from migd.sysfs import STORE_MAX, ThreadStates, kstrtoull

from .helpers import Daemon

KNOB = "kernel/mm/migrate_offload/nr_max_batched_migration"


def _in_read(pid: int) -> bool:
    """Whether ``pid`` sleeps in read(2) (x86-64 syscall 0; aarch64 63)."""
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split(" ", 1)[0] == ("63" if os.uname().machine == "aarch64" else "0")


def _wait_in_read(procs, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(_in_read(p.pid) for p in procs):
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.02)


def _cat(path) -> subprocess.Popen:
    return subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """A ``cat`` the user starts takes SIGINT's default action.  A test run
    started as a background job of a non-interactive shell ignores SIGINT
    (bash does that without job control), and an ignored disposition is
    inherited by every child: the signal tests would then wait in vain."""
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def quiet_tracing(daemon):
    """tracing_on 0 and the ring drained: a trace_pipe reader blocks."""
    daemon.write("kernel/tracing/tracing_on", "0")
    daemon.write("kernel/tracing/trace", "")  # O_TRUNC: the ring cleared
    try:
        yield daemon.p("kernel/tracing/trace_pipe")
    finally:
        daemon.write("kernel/tracing/tracing_on", "1")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_reader_blocked_on_an_idle_trace_pipe_dies_by_its_signal(quiet_tracing, sig):
    """The kernel sends FUSE_INTERRUPT for the signal; the read ends with EINTR
    and the reader dies of its signal instead of sleeping in D state."""
    reader = _cat(quiet_tracing)
    _wait_in_read([reader])  # waiting: nothing to read
    reader.send_signal(sig)
    assert reader.wait(timeout=30) == -sig


def test_a_trace_pipe_reader_that_read_gets_eof_when_tracing_stops(daemon):
    """tracing_wait_pipe(): once a reader has read something (``iter->pos``),
    an empty ring with tracing off ends its read with EOF (rb_simple_write()
    wakes it), so ``cat trace_pipe`` exits 0 after ``echo 0 > tracing_on``;
    a reader that has read nothing keeps waiting (the quiet_tracing tests)."""
    daemon.write("kernel/tracing/tracing_on", "1")
    reader = subprocess.Popen(["cat", str(daemon.p("kernel/tracing/trace_pipe"))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([reader.stdout], [], [], 60)
        assert ready and reader.stdout.read1(4096), "no event within 60 s"
        daemon.write("kernel/tracing/tracing_on", "0")
        out, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
    finally:
        if reader.poll() is None:
            reader.kill()
        daemon.write("kernel/tracing/tracing_on", "1")


def test_blocked_trace_pipe_readers_are_bounded_and_the_next_is_ebusy(quiet_tracing):
    """Each blocked read holds one of the daemon's threads: at most 8 wait."""
    readers = [_cat(quiet_tracing) for _ in range(8)]
    try:
        _wait_in_read(readers)
        time.sleep(0.5)  # their requests reach the daemon's wait
        _, err = _cat(quiet_tracing).communicate(timeout=30)
        assert os.strerror(errno.EBUSY).encode() in err, err
        assert all(r.poll() is None for r in readers)
    finally:
        for r in readers:
            r.send_signal(signal.SIGINT)
        for r in readers:
            assert r.wait(timeout=30) == -signal.SIGINT


_WRITER = """
import errno, os, sys
path, data = sys.argv[1], sys.stdin.buffer.read()
fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
try:
    print(os.write(fd, data))
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def _write(path, data: bytes) -> str:
    """One write(2) of ``data``, from a child: the count written or the errno's name."""
    p = subprocess.run([sys.executable, "-c", _WRITER, str(path)], input=data,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


def test_a_store_takes_at_most_a_page_as_kernfs_does(daemon):
    """kernfs_fop_write_iter: ``len = min(len, PAGE_SIZE)`` and a NUL-terminated copy;
    kstrtoull reads up to that NUL.  So a 128 KiB number is EINVAL (ERANGE in 4096
    digits) and changes nothing, and "64\\n" followed by NULs past a page is a short
    write of one page that sets 64."""
    knob = daemon.p(KNOB)
    before = daemon.read(KNOB)
    assert _write(knob, b"7" * (128 << 10)) == "EINVAL"
    assert daemon.read(KNOB) == before
    assert _write(knob, b"64\n" + b"\0" * 8000) == str(STORE_MAX) == "4096"
    assert daemon.read(KNOB) == "64\n"
    daemon.write(KNOB, before)


#: A reader process: every readable file of the tree in turn, for a few
#: seconds; a failed read exits non-zero with its error.
_READER = r"""
import os, sys, time
mount, end = sys.argv[1], time.monotonic() + float(sys.argv[2])
paths = [os.path.join(d, n) for d, _, names in os.walk(mount) for n in names
         if n != "trace_pipe" and os.stat(os.path.join(d, n)).st_mode & 0o444]
while time.monotonic() < end:
    for p in paths:
        with open(p, "rb") as f:
            f.read()
"""


def test_more_readers_than_libfuse_keeps_threads_are_all_answered(daemon):
    """24 processes reading the whole tree at once: libfuse2 keeps at most 10
    idle threads, so it starts and ends threads all along, each with a Python
    thread state of its own; every read is answered and the daemon lives on."""
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(daemon.mount), "4"],
                                stderr=subprocess.PIPE) for _ in range(24)]
    try:
        for r in readers:
            assert r.wait(120) == 0, r.stderr.read().decode()[-2000:]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
            r.wait(10)
            r.stderr.close()
    assert daemon.proc.poll() is None
    assert daemon.read(KNOB).strip().isdigit()


def test_a_number_of_any_length_parses_in_linear_time():
    """kstrtoull keeps counting digits past an overflow, as ``_parse_integer_limit``
    does; the result is ERANGE, whatever the length (a million digits here)."""
    with pytest.raises(ValueError, match="ERANGE"):
        kstrtoull(b"9" * 1_000_000)
    assert kstrtoull(b"0" * 100_000 + b"17") == 0o17  # leading 0: octal, however many


@pytest.mark.slow
def test_signals_a_user_may_send_do_not_end_the_daemon(tmp_path):
    """SIGUSR1 logs the state; SIGHUP, SIGUSR2 and SIGPIPE are logged and ignored;
    an unmount from outside ends the daemon, checked, with exit status 1."""
    d = Daemon(tmp_path)
    try:
        d.wait_ready()
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGHUP):
            d.proc.send_signal(sig)
        deadline = time.monotonic() + 30
        while len([e for e in d.events() if e["event"] in ("state", "signal_ignored")]) < 4:
            assert d.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        state = [e for e in d.events() if e["event"] == "state"][0]
        assert state["migrator"] == "none" and state["pgmigrate_success"] >= 0
        assert {e["signal"] for e in d.events() if e["event"] == "signal_ignored"} == \
            {"SIGUSR2", "SIGPIPE", "SIGHUP"}
        assert subprocess.run(["cat", str(d.p(KNOB))], capture_output=True,
                              timeout=30).stdout == b"512\n"  # still serving
        subprocess.run(["fusermount", "-u", str(d.mount)], check=True, timeout=30)
        assert d.proc.wait(timeout=60) == 1
        events = [e["event"] for e in d.events()]
        assert events.index("tree_unmounted") < events.index("stopped")
        assert [e for e in d.events() if e["event"] == "stopped"][0]["integrity_ok"] is True
    finally:
        d.close()


_HAMMER = """
import errno, os, sys, collections
path, seen = sys.argv[1], collections.Counter()
while True:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as e:  # the tree is gone: its directory is empty, or not connected
        seen["open:" + errno.errorcode[e.errno]] += 1
        break
    try:
        os.write(fd, b"256\\n")
        seen["ok"] += 1
    except OSError as e:
        seen[errno.errorcode[e.errno]] += 1
    finally:
        os.close(fd)
print(dict(seen))
"""


@pytest.mark.slow
def test_writes_in_flight_at_shutdown_end_with_enodev_and_nothing_above_info(tmp_path):
    """A store reaching a daemon that stops gets ENODEV (kernfs_get_active() failing
    on a removed node), never EINVAL; no line above info follows ``stopped``."""
    d = Daemon(tmp_path)
    try:
        d.wait_ready()
        hammer = subprocess.Popen([sys.executable, "-c", _HAMMER, str(d.p(KNOB))],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert d.stop(timeout=60) == 0
        seen = eval(hammer.communicate(timeout=60)[0])  # noqa: S307 - our child's dict
        assert seen["ok"] > 0
        assert set(seen) <= {"ok", "ENODEV", "open:ENODEV", "open:ENOENT", "open:ENOTCONN"}, seen
        d.log.flush()
        d.log.seek(0)
        lines = d.log.read().splitlines()
        after = lines[[i for i, ln in enumerate(lines) if '"stopped"' in ln][0] + 1:]
        assert after == [], after
        assert not [ln for ln in lines if not ln.startswith("{")], "non-JSON lines logged"
        assert not [e for e in d.events() if e["level"] not in ("info", "debug")]
    finally:
        d.close()


_SERVE_AND_UNMOUNT = """
import os, subprocess, sys, threading, time
from migd.sysfs import SysfsTree, is_mounted, serve
mnt = sys.argv[1]
t = threading.Thread(target=serve, args=(SysfsTree(), mnt, None))
t.start()
deadline = time.monotonic() + 30
while not is_mounted(mnt):
    assert time.monotonic() < deadline
    time.sleep(0.01)
subprocess.run(["fusermount", "-u", mnt], check=True, timeout=30)
t.join(30)
sigign = next(int(ln.split()[1], 16) for ln in open("/proc/self/status")
              if ln.startswith("SigIgn:"))
print(bool(sigign & (1 << 12)))  # SIGPIPE is 13: bit 12
"""


@pytest.mark.slow
def test_a_process_that_served_the_tree_still_ignores_sigpipe(tmp_path):
    """libfuse2's fuse_remove_signal_handlers() resets an ignored SIGPIPE to
    SIG_DFL; the soak and the tests serve in-process and were then killed by
    their next write to a closed pipe."""
    (tmp_path / "m").mkdir()
    p = subprocess.run([sys.executable, "-c", _SERVE_AND_UNMOUNT, str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0 and p.stdout == "True\n", p.stderr


@pytest.mark.slow
def test_a_first_start_says_it_compiles_and_asks_systemd_for_time(tmp_path):
    """On an empty compile cache the second log line says what is compiled and
    where it is cached, each warm-up stage is logged and extends systemd's start
    timeout (EXTEND_TIMEOUT_USEC), every kernel is compiled once; a second
    start compiles nothing."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}  # empty: a first start
    for start in ("cold", "warm"):
        (tmp_path / start).mkdir()
        d = Daemon(tmp_path / start, env=env)
        try:
            msgs = d.wait_ready()
            events = d.events()
            compiling = [e for e in events if e["event"] == "compiling"]
            extends = [m for m in msgs if m.startswith(b"EXTEND_TIMEOUT_USEC=")]
            if start == "cold":
                assert [e["event"] for e in events[:2]] == ["starting", "compiling"]
                assert events[1]["kernels"] > 10
                assert events[1]["cache"] == str(tmp_path / "cache")
                stages = [e["stage"] for e in compiling[1:]]
                assert len(stages) == len(set(stages)) == len(extends) >= 4
                # each kernel compiled for one signature: numba names a
                # kernel's second compiled signature <kernel>.2.nbc (a
                # literal argument once compiled helpers again, ~1 s a start)
                cached = [f.name for f in (tmp_path / "cache").rglob("*.nbc")]
                assert len(cached) > 10
                assert [f for f in cached if not f.endswith(".1.nbc")] == []
            else:
                assert compiling == [] and extends == []
            assert d.stop(timeout=60) == 0
        finally:
            d.close()


@pytest.mark.slow
def test_each_copy_of_the_sources_has_its_own_compile_cache(tmp_path):
    """numba files a cached kernel under a hash of its source file's path, so
    a second copy of the same sources (a fresh clone) compiles everything
    again: its cache directory, and the mark of a complete warm-up in it, must
    be its own, or its first start takes the first copy's mark for a warm
    cache (silent, and without the compile child).  The same copy keeps one."""
    src = Path(__file__).resolve().parent.parent / "migd"
    copy = tmp_path / "clone"
    shutil.copytree(src, copy / "migd", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    code = "import migd, os; print(migd.__file__, os.environ['NUMBA_CACHE_DIR'])"

    def where(path: Path) -> list[str]:
        p = subprocess.run([sys.executable, "-c", code], env=env | {"PYTHONPATH": str(path)},
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    (tmp_path / "link").symlink_to(copy)  # numba keys by the path, symlinks unresolved
    (here, first), (_, again), (there, other) = where(src.parent), where(src.parent), where(copy)
    linked, via_link = where(tmp_path / "link")
    assert Path(here).parent == src and Path(there).parent == copy / "migd"
    assert Path(linked).parent == tmp_path / "link" / "migd"
    assert first == again and len({first, other, via_link}) == 3
    assert {Path(d).parent for d in (first, other, via_link)} == {tmp_path / "cache" / "migd"}


_CHILD_FROM_HERE = r"""
import trio
from migd.daemon._run import start_compile_child
async def main():
    child = await start_compile_child()
    with trio.move_on_after(1.5):  # a decoy fails at once; the real child compiles for seconds
        await child.wait()
    print(child.returncode)
    if child.returncode is None:
        child.kill()
        await child.wait()
trio.run(main)
"""


@pytest.mark.slow
def test_a_re_exec_and_the_compile_child_run_this_migd_whatever_the_working_directory(
        tmp_path):
    """``python -m`` and ``-c`` put the working directory first on the path: run
    from another checkout, the re-exec (``migd``'s streaming-copy tunable) and
    the first start's compile child imported that checkout's ``migd`` instead
    (and the child compiled it into this cache for nothing).  Both run
    ``python -P`` with this package's root first on PYTHONPATH."""
    (tmp_path / "migd").mkdir()
    marker = tmp_path / "imported"
    (tmp_path / "migd" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MIGD_NO_REEXEC")}
    p = subprocess.run([str(Path(sys.executable).parent / "migd"), "--version"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("migd "), p.stderr
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")  # empty: a first start's child
    p = subprocess.run([sys.executable, "-P", "-c", _CHILD_FROM_HERE], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() in (["None"], ["0"]), (p.stdout, p.stderr)
    assert not marker.exists()


def test_thread_states_kept_for_foreign_threads_only_and_freed_when_they_end():
    """libfuse's threads are not Python's: each keeps one thread state across its
    callbacks (held at its first), freed once the thread is gone; a thread
    Python started is left to Python, which deletes its state itself."""
    states = ThreadStates()
    libc = ctypes.CDLL(None)
    seen = []

    def callback(arg):
        states.hold()
        seen.append(len(states))

    start = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(callback)
    for _ in range(3):  # foreign threads, as libfuse's: each one kept
        tid = ctypes.c_ulong()
        assert libc.pthread_create(ctypes.byref(tid), None, start, None) == 0
        assert libc.pthread_join(tid, None) == 0
    assert seen and all(n >= 1 for n in seen), seen
    deadline = time.monotonic() + 10
    while len(states) and time.monotonic() < deadline:  # joined: their tids go
        states.release_dead()
        time.sleep(0.01)
    assert len(states) == 0
    kept = []
    t = threading.Thread(target=lambda: (states.hold(), kept.append(len(states))))
    t.start()
    t.join()
    assert kept == [0]
