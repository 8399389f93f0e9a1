"""The /metrics server in process: bounded threads, timeouts, and client_python's negotiation.

test_metrics scrapes a live daemon with promtool and a real Prometheus; here the
server itself, against a small real System: idle connections cost no thread, an
idle connection is closed after the timeout, and OpenMetrics, gzip and ``name[]``
answer as client_python's own server does.
"""

import gzip
import http.client
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from migd.daemon import System, load_config
from migd.metrics import serve_metrics
from migd.metrics._pool import TIMEOUT, HeadHandler, PooledServer

from .helpers import SMALL_CONFIG

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def tasks() -> int:
    """Threads of this process, Python's or not."""
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="module")
def system():
    return System(load_config(text=SMALL_CONFIG))


@pytest.fixture
def served(system):
    servers = []

    def serve(**kw):
        server, port = serve_metrics(system, "127.0.0.1:0", **kw)
        servers.append(server)
        return port

    yield serve
    for s in servers:
        s.shutdown()


def get(port: int, path: str = "/metrics", method: str = "GET", **headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request(method, path, headers=headers)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def sample_names(body: bytes) -> set[str]:
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def test_64_idle_connections_add_no_thread_and_a_scrape_still_answers(served):
    before = tasks()
    port = served()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
    try:
        status, _, body = get(port)  # accepted after all 64 (the backlog is in order)
        assert status == 200 and "migd_batches_total" in sample_names(body)
        assert tasks() - before <= 16
        assert all(still_open(s) for s in idle)  # held, not dropped to save threads
    finally:
        for s in idle:
            s.close()


def test_a_connection_that_sent_nothing_costs_the_server_no_descriptor(served):
    """tcp(7) TCP_DEFER_ACCEPT: the server accepts a connection once its first
    bytes are in, so a scrape is one wake of the answering thread.  /metrics
    defers for DEFER_ACCEPT seconds; here, for 30 (the kernel's first SYN-ACK
    resend past them, 31 s): eight connections that send nothing add this
    process eight descriptors (their client ends), none of the server's, a
    scrape is answered meanwhile, and one that then sends its request too."""
    from migd.metrics._http import DEFER_ACCEPT
    server, port = serve_metrics(System(load_config(text=SMALL_CONFIG)), "127.0.0.1:0")
    try:
        # the kernel rounds up to a SYN-ACK resend (1, 3, 7 s): deferred, and
        # accepted before the head timeout would run out
        deferred = server.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
        assert 1 <= DEFER_ACCEPT <= deferred < TIMEOUT
    finally:
        server.shutdown()

    class Handler(HeadHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

    server = PooledServer(("127.0.0.1", 0), Handler, defer_accept=30)
    port = server.server_address[1]
    before = len(os.listdir("/proc/self/fd"))
    idle = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(8)]
    try:
        assert get(port, "/")[0] == 200
        time.sleep(0.2)
        assert len(os.listdir("/proc/self/fd")) - before == 8
        idle[3].sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert idle[3].recv(64).startswith(b"HTTP/1.0 200")
    finally:
        for s in idle:
            s.close()
        server.shutdown()


def test_the_answering_thread_runs_in_the_real_time_class_and_the_workers_do_not(system):
    """The thread answering /metrics preempts the tree's threads (SCHED_RR at
    ANSWER_RT_PRIORITY: sched(7)); the workers finishing slow sends stay in
    the normal class at the tree's nice value.  The tests run as root, which
    may set both."""
    from migd.metrics._http import ANSWER_RT_PRIORITY
    from migd.sysfs import TREE_THREAD_NICE
    server, port = serve_metrics(system, "127.0.0.1:0")
    try:
        assert get(port)[0] == 200
        answering, *workers = server._threads
        # sched_getscheduler(2) returns the policy with the reset-on-fork flag
        assert os.sched_getscheduler(answering.native_id) == \
            os.SCHED_RR | os.SCHED_RESET_ON_FORK
        assert os.sched_getparam(answering.native_id).sched_priority == ANSWER_RT_PRIORITY
        deadline = time.monotonic() + 20  # each worker sets its own when it starts
        while time.monotonic() < deadline and any(
                os.getpriority(os.PRIO_PROCESS, w.native_id) != TREE_THREAD_NICE
                for w in workers):
            time.sleep(0.01)
        for w in workers:
            assert os.sched_getscheduler(w.native_id) == os.SCHED_OTHER
            assert os.getpriority(os.PRIO_PROCESS, w.native_id) == TREE_THREAD_NICE
    finally:
        server.shutdown()


def test_an_idle_connection_is_closed_after_the_timeout(served):
    port = served(timeout=0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        assert s.recv(1) == b""  # closed by the server; the 20 s timeout is hang detection
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n")  # a head that never ends is closed too
        assert s.recv(1) == b""
    assert get(port)[0] == 200


def test_past_max_pending_the_oldest_idle_connection_is_closed(served):
    port = served(max_pending=4, timeout=60)  # not expired meanwhile: only eviction closes
    idle = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(4)]
    for s in idle:  # accepted once bytes came (defer_accept), then held
        s.sendall(b"GET")
        time.sleep(0.05)  # in this order
    try:
        assert get(port)[0] == 200
        assert idle[0].recv(1) == b""
        assert all(still_open(s) for s in idle[1:])
    finally:
        for s in idle:
            s.close()


def test_a_head_past_its_bound_is_431(served):
    port = served()
    status, _, _ = get(port, **{"X-Filler": "x" * 20000})
    assert status == 431


def test_openmetrics_when_asked(served):
    port = served()
    status, headers, body = get(port, Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith(OPENMETRICS)
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {s.name for f in openmetrics_families(text) for s in f.samples}
    assert "migd_batches_total" in names and "migd_migrator_info" in names
    _, headers, body = get(port)
    assert headers["Content-Type"].startswith("text/plain") and b"# EOF" not in body


def test_a_malformed_accept_header_is_400_and_the_next_scrape_answers(served):
    """choose_encoder() raises on an OpenMetrics version it cannot parse: a
    one-line 400, not a connection closed without an answer."""
    port = served()
    status, _, body = get(port, Accept="application/openmetrics-text; version=1.x")
    assert status == 400 and body.startswith(b"bad Accept header: ")
    assert get(port)[0] == 200


def test_gzip_when_accepted(served):
    port = served()
    _, headers, body = get(port, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert int(headers["Content-Length"]) == len(body)
    assert "migd_batches_total" in sample_names(gzip.decompress(body))
    _, headers, body = get(port)
    assert "Content-Encoding" not in headers and "migd_batches_total" in sample_names(body)


def test_name_filter_keeps_only_the_named_series(served):
    port = served()
    q = "/metrics?name[]=migd_batches_total&name[]=migd_node_used_bytes"
    status, _, body = get(port, q)
    assert status == 200
    assert sample_names(body) == {"migd_batches_total", "migd_node_used_bytes"}


def test_other_paths_are_404_and_head_has_no_body(served):
    port = served()
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        assert get(port, path)[0] == 404, path
    _, headers, body = get(port)
    status, head_headers, head_body = get(port, method="HEAD")
    assert status == 200 and head_body == b""
    assert int(head_headers["Content-Length"]) == len(body)  # the System is idle: same body
    assert get(port, method="POST")[0] == 501


def test_shutdown_stops_every_thread_and_closes_the_port(system):
    before = tasks()
    server, port = serve_metrics(system, "127.0.0.1:0")
    idle = socket.create_connection(("127.0.0.1", port), timeout=20)
    idle.sendall(b"GET")  # accepted (defer_accept) and held
    assert get(port)[0] == 200
    server.shutdown()
    assert idle.recv(1) == b""
    idle.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=20).close()
    deadline = time.monotonic() + 20
    while tasks() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tasks() <= before


def test_a_connection_dropped_by_an_earlier_event_of_the_same_batch_is_skipped():
    """With ``max_pending`` connections held, an accept drops the oldest; when
    that connection's own data came in the same selector batch, its event is
    skipped, not read from a closed socket (which ended the accept loop and
    /metrics with it)."""
    class Handler(HeadHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok\n")

    server = PooledServer(("127.0.0.1", 0), Handler, max_pending=1)
    real = server._sel.select

    def batched(timeout=None):  # the loop late (waiting for the GIL): events pile up
        time.sleep(0.3)
        return real(timeout)
    server._sel.select = batched
    try:
        held = socket.create_connection(server.server_address)
        time.sleep(0.5)  # accepted and held: max_pending reached
        other = socket.create_connection(server.server_address)  # accept: drops `held`
        held.send(b"GET / HTTP/1.0\r\n")  # and held's data, in the same batch
        time.sleep(1.0)
        assert server._threads[0].is_alive()
        with socket.create_connection(server.server_address, timeout=10) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.0 200")
        held.close()
        other.close()
    finally:
        server.shutdown()


def test_an_answer_a_client_does_not_take_at_once_is_finished_by_a_worker():
    """The answering thread sends what the socket takes now; a client that
    reads late (the rest did not fit the buffers) still gets the whole answer,
    from a worker, and the answering thread went on meanwhile."""
    body = bytes(range(256)) * 65536  # 16 MiB: more than the socket buffers take

    class Handler(HeadHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = PooledServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET / HTTP/1.0\r\n\r\n")
        time.sleep(0.5)  # not reading: the rest waits for a worker's send
        assert get(port, "/")[2] == body  # another client is answered meanwhile
        got = bytearray()
        while chunk := slow.recv(1 << 16):
            got += chunk
        slow.close()
        assert got.endswith(body) and got.startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()


def test_the_answering_thread_waits_as_long_as_it_ran():
    """A flood of scrapes must not take the GIL from the engine's thread, which
    loses every race for it to a busy thread (migd._gil): after each turn the
    answering thread waits, without the GIL, as long as it ran (its CPU
    time), so after a handler that computes for 20 ms of its thread's CPU
    it asks to wait at least that long."""
    waits = []

    class Recording(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return super().wait(timeout)

    class Handler(HeadHandler):
        def do_GET(self):  # noqa: N802
            t = time.thread_time()
            while time.thread_time() - t < 0.02:  # 20 ms of this thread's CPU
                pass
            self.send_response(200)
            self.end_headers()

    server = PooledServer(("127.0.0.1", 0), Handler)
    server._stop = Recording()  # the accepting thread's waits, seen from here
    port = server.server_address[1]
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert c.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()
    assert sum(w is not None and w >= 0.02 for w in waits) == 3, waits


_FLOOD = r"""
import socket, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
def scrape_back_to_back():
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(65536):
                pass
threads = [threading.Thread(target=scrape_back_to_back) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_a_request_sent_after_its_connect_is_answered_under_a_flood():
    """Held connections are read before the listening socket in each turn:
    under a flood the backlog never empties, and a request that came after
    its connection waited behind accepts until its head timeout dropped it."""
    class Handler(HeadHandler):
        def do_GET(self):  # noqa: N802
            t = time.thread_time()
            while time.thread_time() - t < 0.0005:  # a collect's CPU, about
                pass
            self.send_response(200)
            self.end_headers()

    # a head not read within a second is dropped: the starved request's fate
    server = PooledServer(("127.0.0.1", 0), Handler, timeout=1.0)
    port = server.server_address[1]
    flood = subprocess.Popen([sys.executable, "-c", _FLOOD, str(port), "30"])
    try:
        time.sleep(0.5)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as late:
                time.sleep(0.02)  # accepted and held meanwhile
                late.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert late.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        flood.kill()
        flood.wait(30)
        server.shutdown()
