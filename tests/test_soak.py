"""migd soak: a real soak with faults, its checks proven able to fail, signals."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import migd.soak
from migd.daemon import System
from migd.mm import TenantSpec
from migd.mm._copy import folios_set_content_copied
from migd.offload import DcbmMigrator
from migd.soak import SoakOptions, run_soak
from migd.tracing import RING_ENTRIES, Tracing

from .helpers import MiB, cli, make_engine, make_machine, thread_nice


def soak_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "migd", "soak", *args]


@pytest.mark.slow
def test_a_20s_soak_with_faults_loses_nothing(tmp_path):
    """20 s keeps the suite in CI's budget; the README's soaks run for hours."""
    out = tmp_path / "soak.json"
    p = subprocess.run(soak_cmd("--duration", "20s", "--faults", "--seed", "7",
                                "--json", str(out)), capture_output=True, text=True,
                       timeout=150)  # below pytest-timeout's 180: this test fails alone
    assert out.exists(), (p.returncode, p.stderr[-3000:])
    s = json.loads(out.read_text())
    assert p.returncode == 0, (p.stderr[-2000:], s["violations"])
    assert json.loads(p.stdout) == s
    assert s["ok"] and s["lost_pages"] == s["corrupt_pages"] == s["invariant_violations"] == 0
    assert s["checks"] >= 6
    # It did what it says: every fault kind fired, every reason migrated, the
    # tree was read and written, the offload fell back.
    # (zen3-ptdma's driver reports no descriptor errors: those two stay unarmed)
    fired = {k for k, n in s["faults_injected"].items() if n}
    assert fired >= {"fail_migrate_alloc", "fail_dma_timeout", "pin_user_pages"}, fired
    assert not fired & {"fail_dma_desc", "fail_dma_partial"}, fired
    assert s["migrated_pages_by_reason"].keys() >= {
        "syscall_or_cpuset", "demotion", "numa_misplaced", "compaction"}
    assert s["fallbacks"] and s["migrated_bytes"] > 1 << 29
    assert sum(s["cleared_by_how"].values()) > 0  # faults got zeroed folios, checked zero
    # The flipper writes every 0.02-0.2 s: ~180 writes in 20 s.  A batch stuck
    # for good (a hung descriptor never timed out) blocks the writes that wait
    # for batches in flight: 69 in 30 s were made in the run that found it.
    assert s["knob_writes"] > 100 and s["cat_reads"] > 1000
    assert s["rss_growth_pct"] <= 5


class SkipsOneFolio(DcbmMigrator):
    """A copy bug: the last folio of every batch is marked copied but not copied."""

    async def migrate_offc(self, batch) -> int:
        mem = batch.memory
        mem.copy_folios(batch.dst[:-1], batch.src[:-1], batch.orders[:-1])
        folios_set_content_copied(mem.mem_map, batch.src)
        return 0


@pytest.mark.slow
def test_the_soak_reports_a_planted_copy_bug_as_corruption(tmp_path):
    def buggy(sys: System) -> DcbmMigrator:
        return SkipsOneFolio(sys.dma, nr_dma_chan=4)
    s = run_soak(SoakOptions(duration=4, seed=3, check_every=0.75,
                             mount=str(tmp_path / "m")), migrator=buggy)
    assert s.corrupt_pages > 0 and not s.ok
    assert s.lost_pages == 0  # mapped where it should be, with the wrong bytes


@pytest.mark.slow
def test_the_same_soak_without_the_bug_is_clean(tmp_path):
    """run_soak runs its own trio loop: called from a plain (not trio) test."""
    s = run_soak(SoakOptions(duration=4, seed=3, check_every=0.75, mount=str(tmp_path / "m")))
    assert s.ok and s.checks >= 4, s.violations
    # The tree's threads ran at TREE_THREAD_NICE; none of this process's threads
    # still does (the trio worker that ran libfuse's loop went back to the cache).
    assert set(thread_nice(os.getpid()).values()) == {0}


def wait_mounted(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        assert time.monotonic() < deadline, "the soak never mounted its tree"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_in_the_middle_of_a_soak_ends_clean(tmp_path):
    mount, out = tmp_path / "m", tmp_path / "soak.json"
    mount.mkdir()
    p = subprocess.Popen(soak_cmd("--duration", "10m", "--faults", "--seed", "11",
                                  "--mount", str(mount), "--json", str(out)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_mounted(mount)
        time.sleep(2)  # batches in flight, DMA descriptors hung by fail_dma_timeout
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=30)
    finally:
        p.kill()
        p.wait(10)
    assert p.returncode == 0, stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["stopped_by_signal"] and s["ok"] and s["lost_pages"] == 0
    assert s["duration_s"] < 60
    assert not os.path.ismount(mount)


@pytest.mark.slow
def test_sigkill_leaves_a_stale_mount_that_the_next_soak_clears(tmp_path):
    mount = tmp_path / "m"
    mount.mkdir()
    p = subprocess.Popen(soak_cmd("--duration", "10m", "--mount", str(mount)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_mounted(mount)
        time.sleep(1)
    finally:
        p.kill()
        # Exits at once: no thread of the soak waits in a FUSE request on its
        # own mount (that one could never die, nor its mount clear).
        p.wait(timeout=30)
    try:
        os.listdir(mount)
        raise AssertionError("a killed soak's mount should be dead")
    except OSError as e:
        assert e.errno == errno.ENOTCONN
    q = subprocess.run(soak_cmd("--duration", "3s", "--mount", str(mount)),
                       capture_output=True, text=True, timeout=120)
    assert q.returncode == 0, q.stderr[-2000:]
    assert json.loads(q.stdout)["ok"]
    assert not os.path.ismount(mount) and os.listdir(mount) == []


@pytest.mark.parametrize("args", [["--duration", "soon"], ["--duration", "-5s"],
                                  ["--seed", "-1"], ["--mount", "/no/such/dir"],
                                  ["--json", "/no/such/dir/s.json"]])
def test_bad_soak_arguments_are_one_line_errors(capsys, monkeypatch, args):
    """In process: refused before any soak starts (one would run 10 minutes)."""
    monkeypatch.setattr(migd.soak, "run_soak", lambda *a, **k: pytest.fail("the soak ran"))
    code, err = cli(capsys, "soak", *args)
    assert code == 2 and err.startswith("migd soak: ") and err.count("\n") == 1, err


async def test_what_grows_with_batches_is_bounded(autojump_clock):
    """The trace ring, the histograms and the engine's books stay the same size
    however many batches run (the soak's RSS check is the end-to-end version)."""
    m = make_machine(True)
    t = m.add_tenant(TenantSpec("t", 4 * MiB, order=0))
    e = make_engine(m, True)
    e.nr_max_batched_migration = 1  # a batch per folio: many batches
    trace = Tracing(0.0)
    trace.attach(e)
    sizes = []
    for k in range(6):
        await e.move_pages(t, np.arange(t.nr_pages), (k + 1) % 2)
        s = e.statistics()
        sizes.append((len(s.batch_pages.counts), len(s.first_folio_seconds.counts),
                      len(s.inaccessible_seconds.counts), len(s.folios_migrated),
                      len(s.fallbacks)))
    assert len(set(sizes)) == 1
    # 1024 batch events and a call's start and end per move_pages, six times
    written = 6 * (1024 + 2)
    assert len(trace.ring) == RING_ENTRIES and trace.ring.overrun == written - RING_ENTRIES
