"""Prometheus: the collector and the /metrics endpoint."""

from ._collector import MigdCollector
from ._http import METRICS_PATH, parse_address, serve_metrics

__all__ = ["METRICS_PATH", "MigdCollector", "parse_address", "serve_metrics"]
