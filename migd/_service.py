"""``migd install-service`` and ``migd prometheus-config``: the files around the daemon.

The systemd unit reads its config from the path on its ``ExecStart`` line
(``--config /etc/migd/migd.toml``) and runs the ``migd`` it names there; the
install steps used to be a comment in the unit, to be followed by hand.  Here
the unit itself says where things go: the config is installed at the path its
``ExecStart`` names, and ``ExecStart`` is pointed at the ``migd`` that runs this
command (the checkout's venv), so the unit and the installed files cannot
disagree.  ``--prefix`` installs under another root and ``--dry-run`` only
says what would be written (tests use both; neither needs root).

Grafana's dashboards go where the shipped provisioning file
(etc/grafana/provisioning/dashboards/migd.yaml, ``options.path``) says Grafana
finds them, read from that file for the same reason; the provisioning files
themselves go beside them, for the user to link into Grafana's own directory
(writing into /etc/grafana was rejected: that is Grafana's to manage).

The Prometheus scrape config is generated from ``--metrics`` for the same
reason: a hand-written example kept ``127.0.0.1:9464`` when the daemon was
started elsewhere.  etc/prometheus/prometheus.yml is this command's output for
the default address (a test keeps them equal).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "migd.service"
UNIT_DIR = Path("/etc/systemd/system")
#: What the shipped unit's ExecStart runs; replaced by the migd running this command.
SHIPPED_MIGD = "/opt/migd/.venv/bin/migd"
GRAFANA = ROOT / "etc" / "grafana"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "migd.yaml"


@dataclass(frozen=True)
class Install:
    """One file to write: its destination and its text."""

    path: Path
    text: str
    keep_existing: bool  # a config the user may have edited is not overwritten


def _migd_command() -> str:
    """The console script beside this interpreter, else ``python -m migd``."""
    script = Path(sys.executable).parent / "migd"
    if script.is_file():
        return str(script)
    return f"{sys.executable} -m migd"


def unit_config_path(unit_text: str) -> Path:
    """The ``--config`` path on the unit's ExecStart line."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            argv = shlex.split(line.removeprefix("ExecStart="))
            if "--config" in argv:
                return Path(argv[argv.index("--config") + 1])
    raise ValueError(f"{UNIT}: ExecStart has no --config")


def dashboards_path(provider_text: str) -> Path:
    """The ``path:`` of the dashboard provider's ``options`` (where Grafana reads them)."""
    for line in provider_text.splitlines():
        key, _, value = line.split("#", 1)[0].strip().partition(":")
        if key == "path" and value.strip():
            return Path(value.strip())
    raise ValueError(f"{DASHBOARD_PROVIDER}: no options.path")


def plan_install(config: Path, prefix: Path = Path("/")) -> list[Install]:
    """The unit (its migd and README pointed at this checkout), the config, and
    Grafana's dashboards and provisioning files."""
    unit = UNIT.read_text()
    unit = unit.replace(SHIPPED_MIGD, _migd_command())
    unit = unit.replace("file:///opt/migd/README.md", (ROOT / "README.md").as_uri())
    target = unit_config_path(unit)
    dashboards = dashboards_path(DASHBOARD_PROVIDER.read_text())
    grafana = [Install(prefix / dashboards.relative_to("/") / f.name, f.read_text(), False)
               for f in sorted((GRAFANA / "dashboards").glob("*.json"))]
    grafana += [Install(prefix / dashboards.parent.relative_to("/") / f.relative_to(GRAFANA),
                        f.read_text(), False)
                for f in sorted((GRAFANA / "provisioning").rglob("*.yaml"))]
    return [Install(prefix / UNIT_DIR.relative_to("/") / UNIT.name, unit, False),
            Install(prefix / target.relative_to("/"), config.read_text(), True), *grafana]


def install_service(config: Path, prefix: Path, dry_run: bool, out=sys.stdout) -> int:
    """Write the unit and the config; ``systemctl daemon-reload`` when installing into /."""
    plan = plan_install(config, prefix)
    for item in plan:
        if item.keep_existing and item.path.exists():
            print(f"keep {item.path} (exists; remove it to install {config})", file=out)
            continue
        print(f"{'would write' if dry_run else 'write'} {item.path}", file=out)
        if not dry_run:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            item.path.write_text(item.text)
    live = prefix == Path("/") and not dry_run
    if live:  # the service's first start loads the kernels instead of compiling them
        print("compile migd's kernels (migd warm-up)", file=out, flush=True)
        # the unit's environment (root, no Environment=): its cache, ~root/.cache/migd,
        # not one a preserved XDG_CACHE_HOME, NUMBA_CACHE_DIR or HOME names
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")} | {"HOME": pwd.getpwuid(0).pw_dir}
        subprocess.run(shlex.split(_migd_command()) + ["warm-up"], check=False, timeout=600,
                       env=env)
    if live and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=60)
    print(f"{'then' if live else 'on the target machine'}: systemctl enable --now migd",
          file=out)
    prov = dashboards_path(DASHBOARD_PROVIDER.read_text()).parent / "provisioning"
    print(f"for Grafana: ln -s {prov}/dashboards/migd.yaml {prov}/datasources/migd.yaml "
          "into /etc/grafana/provisioning/{dashboards,datasources}/", file=out)
    return 0


def prometheus_config(metrics: str) -> str:
    """A prometheus.yml scraping migd at ``metrics`` (``HOST:PORT``, as ``--metrics``).

    A wildcard listen address (``0.0.0.0``, ``::``, empty) is scraped on the
    loopback address: Prometheus cannot connect to a wildcard.
    """
    from .metrics import parse_address

    host, port = parse_address(metrics)
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"# Prometheus scraping migd's /metrics (migd run --metrics {metrics}).\n"
            f"# Generated by: migd prometheus-config --metrics {metrics}\n"
            "global:\n"
            "  scrape_interval: 5s\n"
            "  evaluation_interval: 5s\n"
            "scrape_configs:\n"
            "  - job_name: migd\n"
            "    static_configs:\n"
            f"      - targets: [\"{target}\"]\n")
