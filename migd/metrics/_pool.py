"""A bounded HTTP/1.0 server: one selector thread, a fixed pool of workers.

The standard library's ThreadingHTTPServer starts a thread per connection and
waits on it without a deadline (377 idle connections were 377 threads).  Here
one thread accepts and reads each request's head without blocking: at most
``MAX_HEAD`` bytes (past it, 431), complete within ``timeout`` seconds of the
accept (else the connection is closed).  Only a complete head goes, through a
bounded queue (full: 503), to one of ``workers`` threads that run the handler
with ``timeout`` for the whole answer (one ``sendall``).  An idle connection costs a file
descriptor, never a thread; held connections are bounded (``max_pending``:
past it the oldest is closed, so a fresh scrape is not refused behind a flood
of idle ones).  Rejected alternatives: ThreadingMixIn with a socket timeout
(still a thread per connection, for the whole timeout), and workers that read
the request themselves (``workers`` idle connections would stall every scrape
for the timeout).  No kernel counterpart: this is the daemon's own plumbing.

Both waits, the accept loop's and a worker's, are ``migd._gil.wait_readable``:
the thread wakes with the GIL handed over by the engine's thread, not raced
for, and says it is done before anything that may block (a worker's send).
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

#: Worker threads: scrapes are serial per Prometheus and a collect takes milliseconds.
WORKERS = 4
#: Seconds for a request's head to arrive, and for each write of the answer.
TIMEOUT = 5.0
#: Connections held while their head arrives; past it the oldest is closed.
MAX_PENDING = 128
#: Complete heads waiting for a worker; past it, 503.
MAX_QUEUED = 16
#: Bytes of request line and headers (Prometheus sends about 300).
MAX_HEAD = 16384


class HeadHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler reading an already-received head, writing to the socket."""

    def setup(self) -> None:
        """The head as the request file; the answer collected, and sent by
        the worker in one ``sendall`` (each socket call waits for the GIL
        again on its return: one per answer, not one per write)."""
        self.connection, head = self.request
        self.rfile = io.BytesIO(head)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        self.rfile.close()  # the answer stays for the worker's sendall

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


class _HandedQueue:
    """A bounded queue whose ``get`` wakes with the GIL handed over: a deque
    and an eventfd counting its items (a semaphore: one read takes one)."""

    def __init__(self, maxsize: int, gil) -> None:
        self.maxsize, self._gil = maxsize, gil
        self._items: collections.deque = collections.deque()
        self._efd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def put(self, item, bounded: bool = True) -> None:
        if bounded and len(self._items) >= self.maxsize:  # only the accept loop puts
            raise queue.Full
        self._items.append(item)
        os.eventfd_write(self._efd, 1)

    def get_nowait(self):
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            raise queue.Empty from None
        return self._items.popleft()

    def get(self):
        """The next item, the GIL asked for: the caller owes ``_gil.done()``."""
        while True:
            if self._gil.wait_readable(self._efd, None):
                try:
                    return self.get_nowait()
                except queue.Empty:  # another worker took it
                    self._gil.done()

    def close(self) -> None:
        os.close(self._efd)


class PooledServer:
    """Serve ``handler`` (a HeadHandler) on ``address``; ``shutdown()`` stops and closes."""

    def __init__(self, address: tuple[str, int], handler: type[HeadHandler], *,
                 workers: int = WORKERS, timeout: float = TIMEOUT,
                 max_pending: int = MAX_PENDING, name: str = "migd-metrics",
                 thread_init: Callable[[], None] | None = None) -> None:
        """``thread_init`` runs first in each of the server's threads (the
        daemon raises their priority there, as the tree's)."""
        host, port = address
        self._thread_init = thread_init or (lambda: None)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()
        self.handler, self.timeout, self.max_pending = handler, timeout, max_pending
        #: connection -> (deadline, head so far, peer address), in accept order
        self._pending: dict[socket.socket, tuple[float, bytearray, tuple]] = {}
        # compiled code: imported when a server starts (after the daemon's
        # compile, which loads it into numba's cache), not with this module
        from .. import _gil
        self._gil = _gil
        self._queue = _HandedQueue(max(MAX_QUEUED, workers), _gil)
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
            self._queue.put(None, bounded=False)
        for t in self._threads[1:]:
            t.join(self.timeout + 5.0)  # a worker is at most one collect and its writes
        if not any(t.is_alive() for t in self._threads[1:]):
            self._queue.close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept_loop(self) -> None:
        self._thread_init()
        try:
            while not self._stop.is_set():
                wait = None
                if self._pending:
                    wait = max(0.0, next(iter(self._pending.values()))[0] - time.monotonic())
                if self._gil.wait_readable(self._sel.fileno(), wait):
                    try:
                        for key, _ in self._sel.select(0):
                            if key.fileobj is self.socket:
                                self._accept()
                            elif key.fileobj in self._pending:  # not dropped by an earlier one
                                self._read(key.fileobj)
                    finally:
                        self._gil.done()
                now = time.monotonic()
                for conn in [c for c, (dl, *_) in self._pending.items() if dl <= now]:
                    self._drop(conn)
        finally:
            for conn in list(self._pending):
                self._drop(conn)
            self._sel.close()
            self.socket.close()

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time: expiry and reads stay timely
            try:
                conn, addr = self.socket.accept()
            except BlockingIOError:
                return
            except OSError:  # EMFILE and the like: give back the oldest held descriptor
                if self._pending:
                    self._drop(next(iter(self._pending)))
                else:
                    self._stop.wait(0.05)
                return
            if len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)))
            conn.setblocking(False)
            self._pending[conn] = (time.monotonic() + self.timeout, bytearray(), addr)
            self._sel.register(conn, selectors.EVENT_READ)
            self._read(conn)  # a scraper's request comes with its connection

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the peer closed, or reset
            self._drop(conn)
            return
        buf = self._pending[conn][1]
        buf += data
        if len(buf) > MAX_HEAD:
            self._pending.pop(conn)
            self._sel.unregister(conn)
            _refuse(conn, "431 Request Header Fields Too Large")
        elif _head_complete(buf):
            _, head, addr = self._pending.pop(conn)
            self._sel.unregister(conn)
            try:
                self._queue.put((conn, bytes(head), addr))
            except queue.Full:
                _refuse(conn, "503 Service Unavailable")

    def _drop(self, conn: socket.socket) -> None:
        if self._pending.pop(conn, None) is not None:
            self._sel.unregister(conn)
        conn.close()

    def _work(self) -> None:
        self._thread_init()
        while True:
            item = self._queue.get()
            if item is None:
                self._gil.done()
                return
            conn, head, addr = item
            try:
                try:
                    conn.settimeout(self.timeout)
                    answer = self.handler((conn, head), addr, self).wfile.getvalue()
                finally:
                    self._gil.done()  # before the send, which may wait on the client
                conn.sendall(answer)
                conn.shutdown(socket.SHUT_WR)
            except Exception:  # noqa: BLE001 (a broken client must not shrink the pool)
                pass
            finally:
                conn.close()
