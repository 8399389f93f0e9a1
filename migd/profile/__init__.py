"""Profiles fitted from measurements: tables, closed-form cells, the fit, the CLI."""

from ._cells import Cell, predict
from ._cli import COMMANDS
from ._fit import Fit, errors, fit
from ._tables import TableError, parse_table, read_table

__all__ = ["COMMANDS", "Cell", "Fit", "TableError", "errors", "fit", "parse_table",
           "predict", "read_table"]
