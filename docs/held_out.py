"""The README's held-out figures for zen3-ptdma, reproducibly.

Splits the calibration tables (``migd/bench/calibration/``) into the rows the
fit sees and the held-out rows the README lists - the ``dcbm,4`` row of
throughput.csv, the 2048- and 32768-page rows of batch_sweep.csv, the vanilla
calls of 16, 256 and 4096 4K folios and of 8 and 256 2M folios, ``mtcopy`` at
4 threads - and runs the README's fit on the first with the second as
``--test`` tables.  Usage, from the tree's root:

    PYTHONPATH=$PWD python docs/held_out.py [--json REPORT]
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "migd" / "bench" / "calibration"
BASE = ROOT / "docs" / "zen3-ptdma-handset.toml"

#: table -> whether a row (a dict of its columns) is held out.
HELD = {
    "throughput.csv": lambda r: r["path"] == "dcbm" and r["channels"] == "4",
    "batch_sweep.csv": lambda r: r["batch_pages"] in ("2048", "32768"),
    "vanilla_first_folio.csv": lambda r: (r["order"], r["n_folios"]) in {
        ("0", "16"), ("0", "256"), ("0", "4096"), ("9", "8"), ("9", "256")},
    "mtcopy.csv": lambda r: r["threads"] == "4",
}


def split(out: Path) -> tuple[list[Path], list[Path]]:
    """Write each table's fitted and held-out rows under ``out``."""
    fitted, held = [], []
    for name, is_held in HELD.items():
        with open(CALIBRATION / name, newline="") as f:
            rows = list(csv.DictReader(f))
        cols = list(rows[0])
        for sub, keep, into in (("fit", False, fitted), ("test", True, held)):
            (out / sub).mkdir(exist_ok=True)
            path = out / sub / name
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, cols, lineterminator="\n")
                w.writeheader()
                w.writerows(r for r in rows if is_held(r) == keep)
            into.append(path)
    return fitted, held


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fitted, held = split(Path(tmp))
        cmd = [sys.executable, "-m", "migd", "profile", "fit", *map(str, fitted),
               "--base", str(BASE), "--out", str(Path(tmp) / "held-out.toml")]
        for t in held:
            cmd += ["--test", str(t)]
        return subprocess.run(cmd + argv, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
