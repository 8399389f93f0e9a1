"""``migd bench``: experiments that reproduce and extend the published measurements."""

from ._experiments import AVAILABLE_MIGRATORS, DEFAULT_CLOCK, EXPERIMENTS, BenchOptions, run
from ._options import (
    MigratorSpec,
    parse_int_list,
    parse_migrators,
    parse_orders,
    parse_size,
)
from ._plot import plot_report
from ._report import BenchReport, BenchRow

__all__ = ["AVAILABLE_MIGRATORS", "DEFAULT_CLOCK", "EXPERIMENTS", "BenchOptions", "BenchReport",
           "BenchRow", "MigratorSpec", "parse_int_list", "parse_migrators", "parse_orders",
           "parse_size", "plot_report", "run"]
