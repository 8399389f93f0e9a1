"""``/metrics`` over HTTP, on a bounded pool of threads; any other path is 404.

prometheus-client's ``start_http_server`` answers 200 with the metrics on any
path (``/``, ``/favicon.ico``, a typo), which hides a wrong scrape path in a
Prometheus config, and starts a thread per connection.  This handler serves
``generate_latest`` on ``/metrics`` only, on the bounded ``PooledServer``,
using only prometheus-client's public names (its private ``MetricsHandler``
was the rejected alternative: it changes between releases).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .._version import migd_version
from ._collector import MigdCollector
from ._pool import MAX_PENDING, TIMEOUT, WORKERS, HeadHandler, PooledServer

METRICS_PATH = "/metrics"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); ValueError names what was wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _handler(registry: CollectorRegistry) -> type[HeadHandler]:
    class Handler(HeadHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path != METRICS_PATH:
                body = f"not found: migd serves {METRICS_PATH} only\n".encode()
                self._reply(404, "text/plain; charset=utf-8", body)
                return
            try:
                body = generate_latest(registry)
            except Exception as e:  # noqa: BLE001 (a scrape error, not a dead worker)
                self._reply(500, "text/plain; charset=utf-8", f"collect failed: {e!r}\n".encode())
                return
            self._reply(200, CONTENT_TYPE_LATEST, body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def serve_metrics(system, address: str, *, workers: int = WORKERS, timeout: float = TIMEOUT,
                  max_pending: int = MAX_PENDING):
    """Start serving; returns the server (``shutdown()`` stops it) and its port.

    ``workers`` threads answer; a request's head must arrive within ``timeout``
    seconds; at most ``max_pending`` connections wait for theirs (see PooledServer).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MigdCollector(system, migd_version()))
    server = PooledServer(parse_address(address), _handler(registry), workers=workers,
                          timeout=timeout, max_pending=max_pending)
    return server, server.server_address[1]
