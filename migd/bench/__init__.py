"""``migd bench``: experiments that reproduce and extend the published measurements."""

from ._busy import busy_reasons
from ._experiments import EXPERIMENTS, options, run
from ._options import (
    Experiment,
    MigratorSpec,
    Option,
    parse_duration,
    parse_int_list,
    parse_migrators,
    parse_orders,
    parse_size,
)
from ._plot import plot_report
from ._report import BenchReport, BenchRow
from ._rig import BenchOptions, Rig, latency_summary, make_migrator

__all__ = ["EXPERIMENTS", "BenchOptions", "BenchReport", "BenchRow",
           "Experiment", "MigratorSpec", "Option", "Rig", "busy_reasons", "latency_summary",
           "make_migrator", "options", "parse_duration", "parse_int_list", "parse_migrators",
           "parse_orders", "parse_size", "plot_report", "run"]
