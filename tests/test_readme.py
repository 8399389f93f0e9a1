"""The README's commands, run as a reader copies them (issue: docs that match)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def test_synth_trace_runs_as_shown_without_the_venv_on_path(tmp_path):
    """``scripts/synth-trace N > busy.trace`` from a shell whose python3 is not
    the venv's: the script finds the checkout's own interpreter."""
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    p = subprocess.run("scripts/synth-trace 200 > " + str(tmp_path / "busy.trace"), shell=True,
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    text = (tmp_path / "busy.trace").read_text()
    assert text.count("mm_migrate_pages_start:") == text.count("mm_migrate_pages:") > 0
    bad = subprocess.run(["scripts/synth-trace", "x"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
