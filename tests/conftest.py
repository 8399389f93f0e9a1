"""Fixtures and helpers shared by the test modules (which never import each other)."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from migd.hw import Clock, VirtualClock, get_profile
from migd.metrics import MigdCollector
from migd.migrate import MigrationEngine
from migd.mm import Machine, NodeSpec, TenantSpec
from migd.offload import CopyBatch, CpuMigrator, Migrator

MiB = 1 << 20


def make_machine(virtual: bool, node_mib: int = 32, words_per_page: int | None = None) -> Machine:
    wpp = words_per_page if words_per_page is not None else (8 if virtual else None)
    return Machine([NodeSpec(node_mib * MiB, "dram", demotion_target=1),
                    NodeSpec(node_mib * MiB, "far")], words_per_page=wpp)


def make_engine(machine: Machine, virtual: bool) -> MigrationEngine:
    return MigrationEngine(machine, VirtualClock() if virtual else Clock(),
                           get_profile("zen3-ptdma"))


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


__all__ = ["DAEMON_CONFIG", "Daemon", "Gate", "MiB", "TenantSpec", "make_engine",
           "SMALL_CONFIG", "make_machine", "np", "scrape_collector", "thread_nice"]


#: Two 16 MiB nodes and one 2 MiB tenant of 4 KiB folios (512): an in-process System.
SMALL_CONFIG = """
[[nodes]]
name = "dram"
capacity = "16M"
[[nodes]]
name = "far"
capacity = "16M"
[[tenants]]
name = "t"
size = "2M"
"""


def scrape_collector(system) -> dict[tuple, float]:
    """One scrape of ``system``'s collector through a CollectorRegistry, as
    {(sample name, sorted labels): value}."""
    registry = CollectorRegistry()
    registry.register(MigdCollector(system, "test"))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def thread_nice(pid: int) -> dict[int, int]:
    """Each thread's nice value, from /proc (field 19 of stat)."""
    nice = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            nice[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return nice


class Gate(Migrator):
    """A deliberately slow migrator: copies, then waits until released."""

    name = "gate"

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()

    async def migrate_offc(self, batch: CopyBatch) -> int:
        self.entered.set()
        await self.release.wait()
        return await CpuMigrator().migrate_offc(batch)


DAEMON_CONFIG = """
[daemon]
log_format = "json"
[[nodes]]
name = "dram"
capacity = "64M"
demotion_target = 1
[[nodes]]
name = "far"
capacity = "64M"
[[tenants]]
name = "small"
size = "8M"
order = 0
access_rate = 20000
[[tenants]]
name = "huge"
size = "16M"
order = 9
access_rate = 5000
[migrator]
active = "none"
[dma]
profile = "native"
[workloads.move]
interval = 0.02
fraction = 0.5
[workloads.demotion]
interval = 0.03
[workloads.promotion]
interval = 0.03
[workloads.compaction]
interval = 0.1
"""


class Daemon:
    def __init__(self, tmp: Path, config: str = DAEMON_CONFIG, env: dict | None = None) -> None:
        self.tmp = tmp
        self.mount = tmp / "sys"
        self.cfg = tmp / "migd.toml"
        self.cfg.write_text(config)
        self.sock_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(60)
        self.log = open(tmp / "migd.log", "w+")  # noqa: SIM115 - lives as long as the daemon
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migd", "run", "--config", str(self.cfg),
             "--mount", str(self.mount), "--metrics", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self) -> list[bytes]:
        """Until READY=1; the notify messages received until then."""
        msgs = []
        while b"READY=1" not in msgs:
            msgs.append(self.sock.recv(4096))
        assert os.path.ismount(self.mount)
        ready = [e for e in self.events() if e["event"] == "ready"][-1]
        self.metrics_url = f"http://127.0.0.1:{ready['metrics_port']}/metrics"
        return msgs

    def p(self, rel: str) -> Path:
        return self.mount / rel

    def read(self, rel: str) -> str:
        return self.p(rel).read_text()

    def write(self, rel: str, value: str | bytes) -> None:
        data = value if isinstance(value, bytes) else value.encode()
        with open(self.p(rel), "wb") as f:  # O_TRUNC first, as echo > does
            f.write(data)

    def stop(self, sig=signal.SIGTERM, timeout: float = 5.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def events(self) -> list[dict]:
        self.log.flush()
        self.log.seek(0)
        return [json.loads(line) for line in self.log if line.startswith("{")]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        subprocess.run(["fusermount", "-uz", str(self.mount)], capture_output=True, timeout=30)
        self.sock.close()
        self.log.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """``migd run`` on DAEMON_CONFIG, one per test module, killed and unmounted after."""
    d = Daemon(tmp_path_factory.mktemp("migd"))
    try:
        d.wait_ready()
        yield d
    finally:
        d.close()
