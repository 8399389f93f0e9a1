"""``migd sweep``: a grid of independent virtual-clock cells, run in this
process, on local worker processes or on a Dask distributed cluster, with
finished cells kept in an output directory so a rerun resumes."""

from ._cell import run_cell
from ._executors import DaskExecutor, InProcess, LocalProcesses, LostWorker, executor
from ._grid import AXES, DEFAULTS, Grid, cell_key, load_grid
from ._options import OPTIONS
from ._plot import averaged_over, check_plot_axes, plot_sweep
from ._run import WALL_FIELDS, SweepResult, run_sweep

__all__ = ["AXES", "DEFAULTS", "OPTIONS", "WALL_FIELDS", "DaskExecutor", "Grid", "InProcess",
           "averaged_over", "check_plot_axes",
           "LocalProcesses", "LostWorker", "SweepResult", "cell_key", "executor", "load_grid",
           "plot_sweep", "run_cell", "run_sweep"]
