"""Prometheus: the collector and the /metrics endpoint."""

from ._collector import MigdCollector
from ._http import serve_metrics

__all__ = ["MigdCollector", "serve_metrics"]
