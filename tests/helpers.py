"""What the test modules share, imported by name (``from .helpers import ...``).

conftest.py holds fixtures only: a helper imported from conftest ties every
module to pytest's plugin loading, and a name there is found by nobody reading
the test.  The daemon configs come from one builder, ``config()``, so that a
test says only how its machine differs from the daemon's usual one.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from migd.cli import main
from migd.hw import Clock, VirtualClock, get_profile
from migd.metrics import MigdCollector
from migd.migrate import MigrationEngine
from migd.mm import Machine, NodeSpec
from migd.offload import CopyBatch, CpuMigrator, Migrator

MiB = 1 << 20


# -- in-process machines ------------------------------------------------------------------


def make_machine(virtual: bool, node_mib: int = 32, words_per_page: int | None = None) -> Machine:
    wpp = words_per_page if words_per_page is not None else (8 if virtual else None)
    return Machine([NodeSpec(node_mib * MiB, "dram", demotion_target=1),
                    NodeSpec(node_mib * MiB, "far")], words_per_page=wpp)


def make_engine(machine: Machine, virtual: bool) -> MigrationEngine:
    return MigrationEngine(machine, VirtualClock() if virtual else Clock(),
                           get_profile("zen3-ptdma"))


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


# -- configs ------------------------------------------------------------------------------

#: The daemon's usual tenants: one of 4 KiB folios, one of 2 MiB folios.
TENANTS = ({"name": "small", "size": "8M", "order": 0, "access_rate": 20000},
           {"name": "huge", "size": "16M", "order": 9, "access_rate": 5000})
#: Every workload, often enough that a test sees each one migrate within a second.
WORKLOADS = {"move": {"interval": 0.02, "fraction": 0.5}, "demotion": {"interval": 0.03},
             "promotion": {"interval": 0.03}, "compaction": {"interval": 0.1}}
_TABLES = {"daemon": {"log_format": "json"}, "migrator": {"active": "none"},
           "dma": {"profile": "native"}, "workloads": WORKLOADS}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string, for the plain names used here
    return repr(v)


def _toml_table(name: str, table: dict) -> list[str]:
    lines = [f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()
                             if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += _toml_table(f"{name}.{k}", v)
    return lines


def config(capacity: str = "64M", tenants=TENANTS, *, nodes: list[dict] | None = None,
           **tables: dict | None) -> str:
    """A config's TOML text: by default the daemon's usual machine (two nodes of
    ``capacity``, dram demoting to far; TENANTS; JSON logs; no migrator active;
    native DMA; every workload).  ``nodes``/``tenants`` replace those lists; a
    keyword per top-level table (``migrator={...}``, ``workloads={...}``)
    replaces that table, and None leaves it out (load_config's defaults apply).
    Text rather than a dict: tests load it, write it for ``migd run``, append to it."""
    if nodes is None:
        nodes = [{"name": "dram", "capacity": capacity, "demotion_target": 1},
                 {"name": "far", "capacity": capacity}]
    lines = []
    for kind, items in (("nodes", nodes), ("tenants", tenants)):
        for item in items:
            lines += [f"[[{kind}]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    for name, table in (_TABLES | tables).items():
        if table is not None:
            lines += _toml_table(name, table)
    return "\n".join(lines) + "\n"


#: ``config(..., **BARE)``: the nodes and tenants only, for an in-process System.
BARE = dict.fromkeys(_TABLES)
#: A small machine for in-process Systems: two 16 MiB nodes and one 2 MiB
#: tenant of 4 KiB folios (512).
SMALL_CONFIG = config("16M", [{"name": "t", "size": "2M"}], **BARE)


# -- metrics ------------------------------------------------------------------------------


def scrape_collector(system) -> dict[tuple, float]:
    """One scrape of ``system``'s collector through a CollectorRegistry, as
    {(sample name, sorted labels): value}."""
    registry = CollectorRegistry()
    registry.register(MigdCollector(system, "test"))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def scrape(url: str) -> str:
    """One HTTP scrape's text."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- processes ----------------------------------------------------------------------------


def thread_nice(pid: int) -> dict[int, int]:
    """Each thread's nice value, from /proc (field 19 of stat)."""
    nice = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            nice[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return nice


def cli(capsys, *argv: str) -> tuple[int, str]:
    """``migd ARGV`` in process: (exit status, stderr).  For refusals, which
    happen before any work; argparse's own refusals exit, and count too."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


class Daemon:
    """``migd run`` as a subprocess on ``config`` (default: the daemon's usual
    one), its tree at ``mount`` (default: TMP/sys), systemd's notify socket and
    a JSON log in TMP."""

    def __init__(self, tmp: Path, config: str | None = None, env: dict | None = None,
                 mount: Path | None = None) -> None:
        self.tmp = tmp
        self.mount = mount or tmp / "sys"
        self.cfg = tmp / "migd.toml"
        self.cfg.write_text(config if config is not None else DAEMON_CONFIG)
        self.sock_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.settimeout(60)
        self.log = open(tmp / "migd.log", "w+")  # noqa: SIM115 - lives as long as the daemon
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migd", "run", "--config", str(self.cfg),
             "--mount", str(self.mount), "--metrics", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

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

    def scrape(self) -> str:
        return scrape(self.metrics_url)

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


async def move_with_each_migrator(system) -> None:
    """Every migrator moves the first tenant once, dcbm last (it stays active)."""
    t = system.tenants[0]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(system.dma.run)
        for k, name in enumerate(("none", "mtcopy", "dcbm")):
            await system.set_migrator(name)
            await system.engine.move_pages(t, np.arange(t.nr_pages), (k + 1) % 2)
        nursery.cancel_scope.cancel()


#: The daemon's usual config (``config()``'s defaults): what ``Daemon`` runs.
DAEMON_CONFIG = config()

__all__ = ["BARE", "DAEMON_CONFIG", "SMALL_CONFIG", "TENANTS", "WORKLOADS", "Daemon", "Gate", "MiB",
           "cli", "config", "free_port", "make_engine", "make_machine", "move_with_each_migrator",
           "scrape", "scrape_collector", "thread_nice"]
