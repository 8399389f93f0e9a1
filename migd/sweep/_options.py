"""``migd sweep``'s options, declared once (the CLI layer's ``Option``): the
CLI builds them, their help and shown defaults from here and gets parsed
values back."""

from __future__ import annotations

from .._args import Option, in_range
from ._executors import parse_scheduler, parse_workers
from ._grid import DEFAULT_MAX_CELLS, MAX_CELLS_LIMIT

_max_cells = in_range("--max-cells", 1, MAX_CELLS_LIMIT)


OPTIONS = (
    Option("grid", "grid", "the grid file ([axes], [cell])", str, metavar="GRID.toml"),
    Option("--scheduler", "scheduler", "a dask.distributed scheduler, tcp://HOST:PORT, or "
           "'local' for a LocalCluster (default: local worker processes)", parse_scheduler,
           metavar="ADDR"),
    Option("--workers", "workers", "local worker processes, or a LocalCluster's workers "
           "(default: one per core)", parse_workers, metavar="N"),
    Option("--out", "out", "one record per finished cell, kept for a rerun to resume", str,
           "sweep-out", "DIR"),
    Option("--plot-axes", "plot_axes", "the two axes of --plot (default: the first two with "
           "several values)", str, metavar="X,Y"),
    Option("--max-cells", "max_cells", "refuse a grid of more cells (the product of its "
           f"axis lengths), before any work; at most {MAX_CELLS_LIMIT}", _max_cells,
           str(DEFAULT_MAX_CELLS), "N"),
)

