"""``migd bench``: experiments that reproduce and extend the published measurements."""

from ._busy import busy_reasons
from ._experiments import EXPERIMENTS, run
from ._options import (
    BATCH_PAGES,
    MIGRATORS,
    PROFILE,
    VARIANT,
    Experiment,
    MigratorSpec,
    max_total,
    parse_duration,
    parse_int_list,
    parse_migrators,
    parse_orders,
    parse_size,
    parse_total,
)
from ._plot import plot_report
from ._report import BenchReport, BenchRow, Layout
from ._rig import BenchOptions, Rig, latency_summary, make_migrator

__all__ = ["BATCH_PAGES", "EXPERIMENTS", "MIGRATORS", "PROFILE", "VARIANT", "BenchOptions",
           "BenchReport", "BenchRow", "Experiment", "Layout", "MigratorSpec", "Rig", "busy_reasons",
           "latency_summary", "make_migrator", "max_total", "parse_duration", "parse_int_list",
           "parse_migrators", "parse_orders", "parse_size", "parse_total", "plot_report", "run"]
