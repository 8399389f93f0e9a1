"""The tree as tools nobody here wrote read it, and as users who are not root.

Against a real ``migd run`` (migrating all along): prometheus-node-exporter
scraped over HTTP, numastat and numactl in a private mount namespace with the
tree bound over /sys/devices/system/node, and an unprivileged uid (setpriv)
reading and writing through the real mount.  Every subprocess has a timeout;
the exporter is killed in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .helpers import Daemon, free_port, scrape

#: Real tools on a live daemon: each starts a process (or a namespace) per check.
pytestmark = pytest.mark.slow
NOBODY = 65534
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_command(program: str) -> list[str]:
    """The README's command line that starts with ``program`` (``\\`` continuations
    joined), as argv: the tests run what a reader copies."""
    lines, fenced, start = README.read_text().splitlines(), False, None
    for i, ln in enumerate(lines):
        fenced ^= ln.startswith("```")
        if fenced and ln.startswith(program + " "):
            start = i
            break
    text = ""
    for ln in lines[start:]:
        text += ln.rstrip("\\")
        if not ln.endswith("\\"):
            break
    return shlex.split(text)


NODE_EXPORTER = readme_command("prometheus-node-exporter")
VMSTAT_FIELDS = next(a.split("=", 1)[1] for a in NODE_EXPORTER
                     if a.startswith("--collector.vmstat.fields="))


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    """A daemon mounted where an unprivileged user can reach it (pytest's
    tmp dirs are 0700), its mount point made traversable by all."""
    top = Path(tempfile.mkdtemp(prefix="migd-tools-"))
    top.chmod(0o755)
    d = Daemon(tmp_path_factory.mktemp("tools"), mount=top / "sys")  # none active: the default
    try:
        d.wait_ready()
        # let every workload migrate a first time
        deadline = time.monotonic() + 20
        while _kv(d.p("proc/vmstat")).get("pgmigrate_success", 0) == 0:
            assert time.monotonic() < deadline, "no migration within 20 s"
            time.sleep(0.05)
        yield d.mount
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            d.stop(timeout=10)
        d.close()
        shutil.rmtree(top, ignore_errors=True)


def _kv(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in path.read_text().splitlines())}


def _meminfo(path: Path) -> dict[str, int]:
    """node_read_meminfo lines: ``Node <n> <Key>: <value>[ kB]`` -> bytes or count."""
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        out[f[2].rstrip(":")] = int(f[3]) * (1024 if len(f) == 5 else 1)
    return out


def _tree_values(mnt: Path) -> dict[str, float]:
    """What node_exporter should report, named as its collectors name them."""
    v: dict[str, float] = {}
    for k, n in _kv(mnt / "proc/vmstat").items():
        if re.match(VMSTAT_FIELDS, k):
            v[f"node_vmstat_{k}"] = n
    for node in sorted((mnt / "devices/system/node").glob("node[0-9]*")):
        nid = node.name[4:]
        for k, n in _meminfo(node / "meminfo").items():
            k = k.replace("(", "_").replace(")", "")
            v[f'node_memory_numa_{k}{{node="{nid}"}}'] = n
        for k, n in _kv(node / "numastat").items():
            v[f'node_memory_numa_{k}_total{{node="{nid}"}}'] = n
    return v


def _scrape(url: str) -> dict[str, float]:
    out = {}
    for line in scrape(url).splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_node_exporter_reads_the_tree(mount):
    exe = shutil.which("prometheus-node-exporter")
    assert exe, "prometheus-node-exporter is not installed (scripts/setup --test)"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    argv = [a.replace("/run/migd/sys", str(mount)) for a in NODE_EXPORTER]
    proc = subprocess.Popen(
        [exe, *argv[1:], f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                metrics = _scrape(url)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "node_exporter did not answer in 15 s"
                time.sleep(0.05)
        for c in ("vmstat", "meminfo_numa"):
            assert metrics[f'node_scrape_collector_success{{collector="{c}"}}'] == 1, c
        # Every value equals the file read around the scrape: migration goes on,
        # so a value must lie between the reads before and after it (counters
        # only grow; gauges may move back, so up to 5 tries for one clean one).
        for _attempt in range(5):
            before = _tree_values(mount)
            metrics = _scrape(url)
            after = _tree_values(mount)
            assert set(before) <= set(metrics), sorted(set(before) - set(metrics))[:5]
            bad = {k: (before[k], metrics[k], after[k]) for k in before
                   if not min(before[k], after[k]) <= metrics[k] <= max(before[k], after[k])}
            if not bad:
                break
        assert not bad, list(bad.items())[:5]
        assert metrics["node_vmstat_pgmigrate_success"] > 0
        # every counter the README's regex names is exported (numa_pages_migrated
        # has no "_" after its name: a "(...)_.*" pattern silently dropped it)
        named = re.match(r"\^\((.*)\)", VMSTAT_FIELDS)[1].split("|")
        for alt in named:
            stem = alt.removesuffix("_.*")
            assert any(k.startswith(f"node_vmstat_{stem}") for k in metrics), alt
        assert "node_vmstat_numa_pages_migrated" in metrics
    finally:
        proc.kill()
        proc.wait(5)


def _in_namespace(mount: Path, cmd: str) -> subprocess.CompletedProcess:
    """``cmd`` in a private mount namespace, the tree bound over the node dir."""
    script = f"mount --bind {mount}/devices/system/node /sys/devices/system/node && {cmd}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def test_numactl_and_numastat_read_the_node_dirs(mount):
    for tool in ("numactl", "numastat"):
        assert shutil.which(tool), f"{tool} is not installed (scripts/setup --test)"
    mb = {n: _meminfo(mount / f"devices/system/node/node{n}/meminfo")["MemTotal"] >> 20
          for n in (0, 1)}
    r = _in_namespace(mount, "numactl --hardware")
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    assert "available: 2 nodes (0-1)" in r.stdout, r.stdout
    for n in (0, 1):
        assert f"node {n} size: {mb[n]} MB" in r.stdout, r.stdout
    assert re.search(r"node 0 cpus: 0\b", r.stdout) and re.search(r"node 1 cpus:\s*$",
                                                                      r.stdout, re.M)
    assert re.search(r"^\s*0:\s+10\s+20\s*$", r.stdout, re.M), r.stdout

    r = _in_namespace(mount, "numastat -m")
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("MemTotal"))
    assert [float(x) for x in row[1:]] == [mb[0], mb[1], mb[0] + mb[1]], row

    before = [_kv(mount / f"devices/system/node/node{n}/numastat")["numa_hit"] for n in (0, 1)]
    r = _in_namespace(mount, "numastat -n")
    after = [_kv(mount / f"devices/system/node/node{n}/numastat")["numa_hit"] for n in (0, 1)]
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    row = next(ln.split() for ln in r.stdout.splitlines() if ln.startswith("Numa_Hit"))
    for n in (0, 1):  # numastat -n shows MB of 4 KiB pages, 2 decimals
        assert round(before[n] * 4096 / 2**20, 2) - 0.01 <= float(row[1 + n]) \
            <= round(after[n] * 4096 / 2**20, 2) + 0.01, (row, before, after)


def test_numastat_p_reads_a_tenant(mount, tmp_path):
    """``numastat -p PID`` over the tree's ``proc`` (overlaid on a directory with
    the host's ``meminfo``, which numastat reads for the huge page size): the
    name from ``status``, and per node the MB of the tenant's ``numa_maps``."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "meminfo").write_text(Path("/proc/meminfo").read_text())
    r = _in_namespace(mount, f"mount -t overlay overlay -o lowerdir={extra}:{mount}/proc "
                      "/proc && numastat -p 1000")
    assert r.returncode == 0, r.stderr
    name = (mount / "proc/1000/comm").read_text().strip()
    assert f"for PID 1000 ({name})" in r.stdout, r.stdout
    header = next(ln for ln in r.stdout.splitlines() if "Node 0" in ln)
    assert header.split() == ["Node", "0", "Node", "1", "Total"], header
    total = float(next(ln for ln in r.stdout.splitlines() if ln.startswith("Total")).split()[-1])
    pages = sum(int(f.split("=")[1]) for ln in (mount / "proc/1000/numa_maps").read_text()
                .splitlines() for f in ln.split() if f.startswith("anon="))
    assert total == round(pages * 4096 / 2**20, 2), (total, pages)


def _as_nobody(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "sh", "-c", script], capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL)


def _files(mount: Path):
    for dirpath, _, files in os.walk(mount):
        for f in files:
            p = Path(dirpath, f)
            yield p, stat.S_IMODE(os.stat(p).st_mode)


def test_tracefs_is_roots_alone(mount):
    """tracefs is mounted 0700 (TRACEFS_DEFAULT_MODE): reading trace_pipe consumes,
    so no other user may open it, nor list the directory."""
    tracing = mount / "kernel/tracing"
    assert stat.S_IMODE(os.stat(tracing).st_mode) == 0o700
    for f in (tracing, tracing / "trace_pipe", tracing / "trace",
              tracing / "events/migrate/enable"):
        r = _as_nobody(f"ls '{f}' || echo REFUSED")
        assert r.stdout.endswith("REFUSED\n") and "Permission denied" in r.stderr, r


def test_unprivileged_user_reads_and_cannot_write(mount):
    tracing = mount / "kernel/tracing"  # root's alone (test_tracefs_is_roots_alone)
    files = [(p, m) for p, m in _files(mount) if tracing not in p.parents]
    assert {m for _, m in files} <= {0o444, 0o644, 0o200}, {oct(m) for _, m in files}
    readable = [str(p) for p, m in files if m & 0o004]
    writable = [str(p) for p, m in files if m & 0o200]
    knobs = {p: p.read_text() for p, m in files  # counters and the trace ring move
             if m == 0o644 and "folios_" not in p.name and p.name != "trace"}
    r = _as_nobody('for f in "$@"; do cat "$f" >/dev/null || echo "READ FAILED $f"; done'
                   .replace('"$@"', " ".join(f"'{f}'" for f in readable)))
    assert "READ FAILED" not in r.stdout + r.stderr and r.returncode == 0, r.stderr[-2000:]
    r = _as_nobody(" ".join(
        f"(echo 1 > '{f}') 2>/dev/null && echo 'WROTE {f}'; "
        f"(echo 1 > '{f}') 2>&1 | grep -q 'Permission denied' || echo 'NOT EACCES {f}';"
        for f in writable))
    assert r.stdout == "", r.stdout[-2000:]
    assert {p: p.read_text() for p in knobs} == knobs  # nothing changed
    # 0200 files are unreadable to others
    wo = [str(p) for p, m in files if m == 0o200]
    r = _as_nobody(" ".join(f"cat '{f}' 2>/dev/null && echo 'READ {f}';" for f in wo))
    assert wo and r.stdout == "", r.stdout


def test_root_may_chmod_and_chown_as_udev_does(mount):
    knob = mount / "kernel/debug/fail_migrate_alloc/probability"
    old = knob.read_text()
    try:
        os.chown(knob, -1, NOBODY)
        os.chmod(knob, 0o664)
        ls = subprocess.run(["ls", "-ln", str(knob)], capture_output=True, text=True,
                            timeout=10).stdout
        assert ls.startswith("-rw-rw-r--") and f" 0 {NOBODY} " in ls, ls
        r = _as_nobody(f"echo 0 > '{knob}'")  # the group may write now
        assert r.returncode == 0, r.stderr
        # dash's echo says "I/O error" for any failed write: ask python for errno
        r = _as_nobody(f"/usr/bin/python3 -I -c \"import os; os.write(os.open('{knob}', "
                       f"os.O_WRONLY), b'1x')\"")
        assert "Errno 22" in r.stderr, r.stderr
    finally:
        with contextlib.suppress(OSError):
            knob.write_text(old)
        os.chmod(knob, 0o644)
        os.chown(knob, 0, 0)
    assert stat.S_IMODE(os.stat(knob).st_mode) == 0o644
    r = _as_nobody(f"echo 0 > '{knob}'")
    assert "Permission denied" in r.stderr, r.stderr
