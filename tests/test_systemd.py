"""The systemd unit: Type=notify, restart, unmount on stop, and verify passes."""

import configparser
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "migd.service"


def test_unit_declares_what_the_daemon_implements():
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(UNIT)
    svc = cp["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure"
    assert svc["ExecStopPost"].startswith("-") and "fusermount -uz" in svc["ExecStopPost"]
    assert svc["DeviceAllow"] == "/dev/fuse rw" and svc["PrivateMounts"] == "no"
    for namespacing in ("PrivateTmp", "ProtectSystem", "ProtectHome"):
        assert namespacing not in svc  # each would hide the mount from the host
    # the tree's threads at nice -20, /metrics' answering thread in SCHED_RR
    assert "CAP_SYS_NICE" in svc["CapabilityBoundingSet"].split()
    assert svc.get("RestrictRealtime", "no") == "no"


def test_systemd_analyze_verify_passes(tmp_path):
    """Verified as installed: ExecStart pointed at this checkout's migd."""
    migd = Path(sys.executable).parent / "migd"
    unit = tmp_path / "migd.service"
    unit.write_text(UNIT.read_text().replace("/opt/migd/.venv/bin/migd", str(migd)))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    problems = [ln for ln in p.stderr.splitlines() if "migd.service" in ln]
    assert problems == [], problems
