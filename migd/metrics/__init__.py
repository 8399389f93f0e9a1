"""Prometheus: the collector and the /metrics endpoint."""

from ._collector import MigdCollector
from ._http import METRICS_PATH, parse_address, serve_metrics
from ._pool import compile_server

__all__ = ["METRICS_PATH", "MigdCollector", "compile_server", "parse_address", "serve_metrics"]
