"""``/metrics`` over HTTP, on its own thread; any other path is 404.

prometheus-client's ``start_http_server`` answers 200 with the metrics on any
path (``/``, ``/favicon.ico``, a typo), which hides a wrong scrape path in a
Prometheus config.  This is the standard library's threading HTTP server with
a handler that serves ``generate_latest`` on ``/metrics`` only; it uses only
prometheus-client's public names (its private ``MetricsHandler`` was the
rejected alternative: it changes between releases).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .._version import migd_version
from ._collector import MigdCollector

METRICS_PATH = "/metrics"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); ValueError names what was wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if urlsplit(self.path).path != METRICS_PATH:
                body = f"not found: migd serves {METRICS_PATH} only\n".encode()
                self._reply(404, "text/plain; charset=utf-8", body)
                return
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _reply(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # one line per scrape on stderr would drown the daemon's log

    return Handler


def serve_metrics(system, address: str):
    """Start serving; returns the server (``shutdown()`` stops it) and its port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MigdCollector(system, migd_version()))
    host, port = parse_address(address)
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    server = Server((host, port), _handler(registry))
    threading.Thread(target=server.serve_forever, name="migd-metrics", daemon=True).start()
    return server, server.server_address[1]
