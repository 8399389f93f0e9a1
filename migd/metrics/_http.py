"""``/metrics`` over HTTP, as client_python serves it; any other path is 404.

prometheus-client's ``start_http_server`` answers 200 with the metrics on any
path (``/``, ``/favicon.ico``, a typo), which hides a wrong scrape path in a
Prometheus config, and starts a thread per connection.  This handler answers
``/metrics`` only, on the bounded ``PooledServer``, with what client_python
offers: OpenMetrics when the ``Accept`` header asks for it, gzip when
``Accept-Encoding`` allows it, and ``name[]`` query filtering.  It composes
prometheus-client's public ``choose_encoder``, ``gzip_accepted`` and
``restricted_registry``; its ``MetricsHandler`` and ``_bake_output`` were the
rejected alternatives (a thread per connection, and a private helper that
changes between releases).  A full scrape's text comes from the negotiated
encoder through ``Exposition``'s templates (the same bytes, a fraction of the
Python time); a ``name[]`` scrape from the encoder itself.
"""

from __future__ import annotations

import gzip
import os
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from .._version import migd_version
from ..sysfs import raise_thread_priority
from ._collector import MigdCollector
from ._exposition import Exposition
from ._pool import MAX_PENDING, TIMEOUT, WORKERS, HeadHandler, PooledServer

METRICS_PATH = "/metrics"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too); ValueError names what was wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics address {text!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _handler(registry: CollectorRegistry, collector: MigdCollector) -> type[HeadHandler]:
    exposition = Exposition()

    class Handler(HeadHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            if url.path != METRICS_PATH:
                body = f"not found: migd serves {METRICS_PATH} only\n".encode()
                self._reply(404, "text/plain; charset=utf-8", body)
                return
            try:
                encoder, ctype = choose_encoder(self.headers.get("Accept"))
            except (TypeError, ValueError) as e:  # e.g. "version=1.x" of OpenMetrics
                self._reply(400, "text/plain; charset=utf-8",
                            f"bad Accept header: {e}\n".encode())
                return
            names = parse_qs(url.query).get("name[]")
            try:
                if names:  # rare (federation, a query by hand): the library's text
                    body = encoder(registry.restricted_registry(names))
                else:
                    body = exposition.encode(collector.families(), encoder)
            except Exception as e:  # noqa: BLE001 (a scrape error, not a dead worker)
                self._reply(500, "text/plain; charset=utf-8", f"collect failed: {e!r}\n".encode())
                return
            if gzip_accepted(self.headers.get("Accept-Encoding")):
                self._reply(200, ctype, gzip.compress(body), {"Content-Encoding": "gzip"})
            else:
                self._reply(200, ctype, body)

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _reply(self, code: int, ctype: str, body: bytes, extra: dict | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


#: The real-time priority of the thread answering /metrics (SCHED_RR, the lowest).
ANSWER_RT_PRIORITY = 1
#: Seconds a connection that sent nothing waits in the kernel before it is
#: accepted (``PooledServer``'s ``defer_accept``): a scrape's request follows
#: its connect within milliseconds; longer, silent connections would only
#: fill the listen backlog in the kernel instead of ``max_pending`` here.
DEFER_ACCEPT = 1


def answer_thread_priority() -> None:
    """Run the thread answering /metrics in the real-time class (SCHED_RR at
    :data:`ANSWER_RT_PRIORITY`), else at the tree's nice value.

    At nice -20 it shared the CPUs with the tree's threads, as many as there
    are readers: under 16 readers a scrape of ~1.4 ms of CPU was preempted
    while it held the GIL (its wall time p99 7-9 ms) and woke behind them, p99
    11-13 ms of the daemon's; in the real-time class it preempts them on
    waking and runs its answer through (daemon's p99 6.7 ms).  Bounded: the
    thread never runs more than half the time (``_pool.TURN``: it waits as
    long as it ran), so a flood of scrapes cannot starve the machine.  The
    tree's threads stay at nice -20 (there SCHED_RR was no better: they are
    many, and each would preempt the others).  Without CAP_SYS_NICE (or an
    RLIMIT_RTPRIO of 1), or under systemd's ``RestrictRealtime=``, the nice
    value only."""
    try:  # 0: the calling thread; nothing it starts or forks inherits the class
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK,
                              os.sched_param(ANSWER_RT_PRIORITY))
    except OSError:
        raise_thread_priority()


def serve_metrics(system, address: str, *, workers: int = WORKERS, timeout: float = TIMEOUT,
                  max_pending: int = MAX_PENDING):
    """Start serving; returns the server (``shutdown()`` stops it) and its port.

    ``workers`` threads answer; a request's head must arrive within ``timeout``
    seconds; at most ``max_pending`` connections wait for theirs (see
    PooledServer); a connection is accepted once its request's first bytes
    are in, or about :data:`DEFER_ACCEPT` seconds after it connected.
    """
    # describe() names nothing (no scrape at registration): name[] must still see it
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    collector = MigdCollector(system, migd_version())
    registry.register(collector)
    # Its threads answer readers as the tree's do: at the tree's priority, so a
    # scrape is not queued behind the copy threads (at nice 0, p50 37 ms and p99
    # 200-250 ms while 16 tree readers and migration ran; -20: 29 and 95-120 ms);
    # the answering thread ahead of the tree's (answer_thread_priority)
    server = PooledServer(parse_address(address), _handler(registry, collector), workers=workers,
                          timeout=timeout, max_pending=max_pending,
                          thread_init=raise_thread_priority, answer_init=answer_thread_priority,
                          defer_accept=DEFER_ACCEPT)
    return server, server.server_address[1]
