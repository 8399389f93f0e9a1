"""A bounded HTTP/1.0 server: one thread answers, a fixed pool finishes slow sends.

The standard library's ThreadingHTTPServer starts a thread per connection and
waits on it without a deadline (377 idle connections were 377 threads).  Here
one thread accepts and reads each request's head without blocking: at most
``MAX_HEAD`` bytes (past it, 431), complete within ``timeout`` seconds of the
accept (else the connection is closed).  A complete head is answered on that
thread (a collect is a fraction of a millisecond) and the answer sent as far
as the socket takes it now; what is left of it (a client that does not read)
goes, through a bounded queue (full: the connection is closed), to one of
``workers`` threads that send it under ``timeout``.  An idle connection costs
a file descriptor, never a thread; held connections are bounded
(``max_pending``: past it the oldest is closed, so a fresh scrape is not
refused behind a flood of idle ones).  Rejected alternatives: ThreadingMixIn
with a socket timeout (still a thread per connection, for the whole timeout),
workers that read the request themselves (``workers`` idle connections would
stall every scrape for the timeout), and answering on a worker (a second
wait for the GIL per scrape: p99 3.5 ms of the scrape under 16 tree readers).
No kernel counterpart: this is the daemon's own plumbing.

The answering thread's wait is ``migd._gil.wait_readable``: it wakes with the
GIL handed over by the engine's thread, not raced for, and its socket calls
keep the GIL (``_csock``): each return of a Python socket call was another
race for it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import numpy as np

#: Threads finishing answers a client did not take at once.
WORKERS = 4
#: Seconds for a request's head to arrive, and for each write of the answer.
TIMEOUT = 5.0
#: Connections held while their head arrives; past it the oldest is closed.
MAX_PENDING = 128
#: Answers waiting for a worker to finish them; past it, the connection is closed.
MAX_QUEUED = 16
#: Bytes of request line and headers (Prometheus sends about 300).
MAX_HEAD = 16384
#: Seconds of a turn of the answering thread (then it waits, without the
#: GIL, as long as it ran): a flood of scrapes takes at most half of the GIL's time.
TURN = 0.002
#: accept4()'s failures that mean no descriptor or memory is left (-errno).
_OUT_OF_DESCRIPTORS = frozenset(-e for e in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                             errno.ENOMEM))
#: A connection's send buffer (the kernel caps it at net.core.wmem_max): an
#: answer (~33 KB of text) goes without blocking.
SNDBUF = 1 << 19


class HeadHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler reading an already-received head, writing to the socket."""

    def setup(self) -> None:
        """The head as the request file; the answer collected, and sent by
        the server at once (``PooledServer._answer``), not written piecemeal
        to the socket."""
        self.connection, head = self.request
        self.rfile = io.BytesIO(head)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        self.rfile.close()  # the answer stays for the server to send

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # one line per scrape on stderr would drown the daemon's log


def _refuse(conn: socket.socket, status: str) -> None:
    """A one-line answer without blocking (it fits an empty send buffer), then close."""
    body = f"{status}\n".encode()
    with contextlib.suppress(OSError):
        conn.send(f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    conn.close()


def _head_complete(buf: bytearray) -> bool:
    return b"\n\r\n" in buf or b"\n\n" in buf


class PooledServer:
    """Serve ``handler`` (a HeadHandler) on ``address``; ``shutdown()`` stops and closes."""

    def __init__(self, address: tuple[str, int], handler: type[HeadHandler], *,
                 workers: int = WORKERS, timeout: float = TIMEOUT,
                 max_pending: int = MAX_PENDING, name: str = "migd-metrics",
                 thread_init: Callable[[], None] | None = None,
                 answer_init: Callable[[], None] | None = None,
                 defer_accept: int = 0) -> None:
        """``thread_init`` runs first in each of the server's threads (the
        daemon raises their priority there, as the tree's), ``answer_init``
        instead of it in the answering thread when given.  ``defer_accept``
        seconds (tcp(7)'s TCP_DEFER_ACCEPT; 0: off): a connection is accepted
        once its first bytes are in, so a scrape is one wake of the answering
        thread, not an accept and a read one wake later.  One that sends
        nothing waits in the kernel's SYN queue, costing no descriptor, until
        the kernel's SYN-ACK resend past that time (1, 3, 7, ... s) brings it
        to accept(), and is held as without it; at ``shutdown()`` it is
        dropped without a FIN (an RST once it sends)."""
        host, port = address
        self._thread_init = thread_init or (lambda: None)
        self._answer_init = answer_init or self._thread_init
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        if defer_accept:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.handler, self.timeout, self.max_pending = handler, timeout, max_pending
        #: connection -> (deadline, head so far), in accept order
        self._pending: dict[socket.socket, tuple[float, bytearray]] = {}
        self._buf = np.empty(4096, dtype=np.uint8)
        # compiled code: imported when a server starts (after the daemon's
        # compile, which loads it into numba's cache), not with this module
        from .. import _gil
        from . import _csock
        self._gil, self._csock = _gil, _csock
        self._queue: queue.Queue = queue.Queue(max(MAX_QUEUED, workers))
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.socket, selectors.EVENT_READ)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._threads = [threading.Thread(target=self._accept_loop, name=name, daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True)
                          for k in range(workers)]
        for t in self._threads:
            t.start()

    def shutdown(self) -> None:
        """Stop accepting, close held and queued connections, let in-flight answers finish."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake_w.send(b"x")
        self._threads[0].join()
        while True:
            try:
                conn = self._queue.get_nowait()
            except queue.Empty:
                break
            if conn is not None:
                conn[0].close()
        for _ in self._threads[1:]:
            self._queue.put(None)
        for t in self._threads[1:]:
            t.join(self.timeout + 5.0)  # a worker is at most one answer's writes
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        self._answer_init()
        try:
            while not self._stop.is_set():
                wait = None
                if self._pending:
                    wait = max(0.0, next(iter(self._pending.values()))[0] - time.monotonic())
                starved = False  # out of descriptors, none to give back
                if self._gil.wait_readable(self._sel.fileno(), wait):
                    ran = time.thread_time()  # this thread's CPU: its time with the GIL, about
                    turn_end = time.perf_counter() + TURN
                    try:
                        # held connections first, the listening socket last: under
                        # a flood its backlog never empties, and turns spent
                        # accepting never reached a request sent after its connect.
                        # With none held, accept at once: select() releases the
                        # GIL, another race for it (a deferred accept brings the
                        # request with its connection, so none are held mostly)
                        events = sorted(self._sel.select(0) if self._pending else [],
                                        key=lambda event: event[0].fileobj is self.socket)
                        if not self._pending:
                            starved |= self._accept(turn_end)
                        for key, _ in events:
                            if key.fileobj is self.socket:
                                starved |= self._accept(turn_end)
                            elif key.fileobj in self._pending:  # not dropped by an earlier one
                                self._read(key.fileobj)
                            if time.perf_counter() > turn_end:
                                break  # the rest is still ready at the next turn
                    finally:
                        self._gil.done()  # before any wait
                    # as long again without the GIL: the engine's thread, which
                    # would lose every race for it to a busy server, gets half
                    self._stop.wait(time.thread_time() - ran)
                if starved:
                    self._stop.wait(0.05)
                now = time.monotonic()
                for conn in [c for c, (dl, _) in self._pending.items() if dl <= now]:
                    self._drop(conn)
        finally:
            for conn in list(self._pending):
                self._drop(conn)
            self._sel.close()
            self.socket.close()

    def _accept(self, turn_end: float) -> bool:
        """Accept a burst, until ``turn_end``; True when out of descriptors with
        none to give back (the caller waits a little, after its ``done()``)."""
        for k in range(64):  # a burst at a time: expiry and reads stay timely
            if k and time.perf_counter() > turn_end:
                return False
            fd = self._csock.accept_now(self.socket.fileno())
            if fd == self._csock.AGAIN:
                return False
            if fd in _OUT_OF_DESCRIPTORS:  # give back the oldest held descriptor
                if self._pending:
                    self._drop(next(iter(self._pending)))
                    return False
                return True
            if fd < 0:  # ECONNABORTED and the like: that connection is gone
                continue
            conn = socket.socket(fileno=fd)  # non-blocking, as accept4() made it
            if len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)))
            self._pending[conn] = (time.monotonic() + self.timeout, bytearray())
            self._read(conn)  # a scraper's request comes with its connection
            if conn in self._pending:  # its request has not come yet
                self._sel.register(conn, selectors.EVENT_READ)
        return False

    def _read(self, conn: socket.socket) -> None:
        n = self._csock.recv_now(conn.fileno(), self._buf)
        if n == self._csock.AGAIN:
            return
        if n <= 0:  # the peer closed, or reset
            self._drop(conn)
            return
        buf = self._pending[conn][1]
        buf += self._buf[:n].tobytes()
        if len(buf) > MAX_HEAD:
            self._forget(conn)
            _refuse(conn, "431 Request Header Fields Too Large")
        elif _head_complete(buf):
            _, head = self._forget(conn)
            self._answer(conn, bytes(head))

    def _answer(self, conn: socket.socket, head: bytes) -> None:
        """Answer on this thread; a worker sends what the socket did not take."""
        try:
            # no peer address: it is for the handler's log, which is off
            answer = self.handler((conn, head), ("", 0), self).wfile.getvalue()
            sent = self._csock.send_now(conn.fileno(), answer, SNDBUF)
        except Exception:  # noqa: BLE001 (a broken client or handler must not end the loop)
            self._close(conn)
            return
        if sent < 0 or sent == len(answer):  # failed, or all sent
            self._close(conn)
            return
        try:
            self._queue.put_nowait((conn, memoryview(answer)[sent:]))
        except queue.Full:
            self._close(conn)

    def _forget(self, conn: socket.socket) -> tuple[float, bytearray]:
        """No longer pending: out of the table and the selector."""
        if conn in self._sel.get_map():
            self._sel.unregister(conn)
        return self._pending.pop(conn)

    def _drop(self, conn: socket.socket) -> None:
        if conn in self._pending:
            self._forget(conn)
        self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        """``close()`` without releasing the GIL."""
        self._csock.close_now(conn.detach())

    def _work(self) -> None:
        self._thread_init()
        while (item := self._queue.get()) is not None:
            conn, rest = item
            try:
                conn.settimeout(self.timeout)
                conn.sendall(rest)
                conn.shutdown(socket.SHUT_WR)
            except Exception:  # noqa: BLE001 (a broken client must not shrink the pool)
                pass
            finally:
                conn.close()


def compile_server() -> None:
    """Load (or compile) the server's compiled calls and the GIL's hand-over
    now (a start's compile, its compile child), not at a first scrape: each
    call made once on a socket pair."""
    from .. import _gil
    from . import _csock
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        if _gil.wait_readable(a.fileno(), 0):
            _gil.done()
        buf = np.empty(1, dtype=np.uint8)
        _csock.recv_now(a.fileno(), buf)
        _csock.recv_now(a.fileno(), buf)  # nothing left: AGAIN
        _csock.accept_now(a.fileno())  # not listening: -EINVAL
        _csock.send_now(a.fileno(), b"", 0)
        _csock.close_now(os.dup(a.fileno()))
    finally:
        a.close()
        b.close()
