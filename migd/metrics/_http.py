"""``/metrics`` over HTTP: prometheus-client's server on its own thread."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, start_http_server

from ._collector import MigdCollector


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); ValueError names what was wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve_metrics(system, address: str):
    """Start serving; returns the server (``shutdown()`` stops it) and its port."""
    try:
        v = version("migd")
    except PackageNotFoundError:
        v = "unknown"
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MigdCollector(system, v))
    host, port = parse_address(address)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, server.server_address[1]
