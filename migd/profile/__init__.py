"""Profiles fitted from measurements: tables, closed-form cells, the fit, the CLI."""

from ._cells import Cell, predict
from ._cli import add_parser
from ._fit import Fit, errors, fit
from ._tables import TableError, parse_table, read_table

__all__ = ["Cell", "Fit", "TableError", "add_parser", "errors", "fit", "parse_table",
           "predict", "read_table"]
