"""The sweep driver: cells not yet in ``--out`` go to the executor, each
result is written as it arrives, and the rows are read back in grid order.

A record is ``<out>/<key>.json`` = ``{"key", "migd", "params", "row"}``,
written to a temporary name and renamed, so a Ctrl-C or a crash leaves whole
records or none; a rerun (after Ctrl-C, a lost worker, a new axis value)
runs only the cells whose record is missing.  One file per cell was chosen
over one appended JSON-lines file: a rename is atomic, an append cut short
by a kill leaves a half line to repair.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._version import migd_version
from ._cell import KINDS
from ._grid import Grid, cell_key

#: Row fields that depend on where and when a cell ran.
WALL_FIELDS = ("wall_seconds", "sim_speed")


@dataclass
class SweepResult:
    axes: dict[str, list]
    rows: list[dict[str, Any]]
    ran: int  # cells run now (the others came from --out)
    executor: str
    workers: int
    seconds: float
    experiment: str  # what the cells ran: its columns follow the axes in the table
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"experiment": "sweep", "axes": self.axes, "rows": self.rows}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.as_json(), f, indent=2)
            f.write("\n")

    @property
    def columns(self) -> tuple[str, ...]:
        """The row fields the cells' experiment declares, after the axes."""
        return KINDS[self.experiment].columns

    def table(self) -> str:
        """One column per axis, then per declared field, each as wide as its
        widest cell and two spaces apart, so no header runs into the next."""
        head = [*self.axes, *self.columns]
        lines = [[str(r[a]) for a in self.axes]
                 + ["-" if r.get(m) is None else f"{r[m]:.4g}" for m in self.columns]
                 for r in self.rows]
        widths = [max(map(len, col)) for col in zip(head, *lines, strict=True)]
        out = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
               for line in [head, *lines]]
        out.append(f"{len(self.rows)} cells, {self.ran} run now on {self.executor} "
                   f"({self.workers} worker(s)) in {self.seconds:.1f} s")
        return "\n".join(out)


def _record_path(out: str, key: str) -> str:
    return os.path.join(out, f"{key}.json")


def _read(out: str, key: str) -> dict | None:
    try:
        with open(_record_path(out, key)) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if rec.get("key") == key else None


def _write(out: str, key: str, params: dict, row: dict) -> None:
    tmp = _record_path(out, f".{key}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump({"key": key, "migd": migd_version(), "params": params, "row": row}, f)
    os.replace(tmp, _record_path(out, key))


def run_sweep(grid: Grid, executor, out: str,
              progress: Callable[[str], None] = lambda msg: None) -> SweepResult:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: {e}") from None
    todo = sum(1 for p in grid.cells() if _read(out, cell_key(p)) is None)
    running: dict[str, dict] = {}  # the cells handed to the executor, not yet written

    def pending():
        """Cells without a record, one at a time (the grid is never listed whole)."""
        for params in grid.cells():
            key = cell_key(params)
            if _read(out, key) is None:
                running[key] = params
                yield key, params

    t0 = time.monotonic()
    done = 0
    progress(f"{todo} of {grid.size} cells to run")
    for key, row in executor.map(pending()):
        _write(out, key, running.pop(key), row)
        done += 1
        elapsed = time.monotonic() - t0
        eta = elapsed / done * max(0, todo - done)
        bar = "#" * (20 * done // max(1, todo))
        progress(f"[{bar:<20}] {done}/{todo} cells, ETA {eta:.0f} s")
    rows = []
    for params in grid.cells():
        key = cell_key(params)
        rec = _read(out, key)
        if rec is None:
            raise RuntimeError(f"cell {key} has no record after the sweep")
        rows.append({**rec["row"], **{a: params[a] for a in grid.axes}})
    return SweepResult(grid.axes, rows, done, executor.name, executor.workers,
                       time.monotonic() - t0, grid.experiment)
