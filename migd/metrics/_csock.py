"""The metrics server's socket calls, made holding the GIL.

Python's socket methods release the GIL around each system call and take it
back after; under load each return is a race for the GIL (``migd._gil``), and
a scrape made about ten of them (accept, recv, setsockopt, send, shutdown,
close).  These make the same calls from compiled code without releasing the
GIL: each is a non-blocking call of microseconds.  A call that would block
says so (``AGAIN``) and the caller goes on as it would have with a Python
socket.  Compiled when first imported (the server imports it when it starts,
after the daemon's compile has cached it).
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import carray, njit

from .._ccall import as_pointer, call5, call5_int

_LIBC = ctypes.CDLL(None)
_SEND, _RECV, _ACCEPT4, _SETSOCKOPT, _SHUTDOWN, _CLOSE, _ERRNO = range(7)
#: The C functions, found here: no address is baked into numba's cache.
_FNS = np.array([ctypes.cast(getattr(_LIBC, name), ctypes.c_void_p).value for name in (
    "send", "recv", "accept4", "setsockopt", "shutdown", "close", "__errno_location")],
    dtype=np.int64)
_MSG_DONTWAIT, _MSG_NOSIGNAL = 0x40, 0x4000
_SOCK_NONBLOCK, _SOCK_CLOEXEC = 0o4000, 0o2000000
_SOL_SOCKET, _SO_SNDBUF, _SHUT_WR = 1, 7, 1
_EAGAIN, _EINTR = 11, 4
#: What recv_now and accept_now return when the call would block.
AGAIN = -(1 << 40)


@njit(cache=True)
def _failed(fns, ret):
    """``ret`` as returned, or AGAIN for EAGAIN/EINTR, or -errno."""
    if ret >= 0:
        return ret
    err = np.int64(carray(as_pointer(call5(fns[_ERRNO], 0, 0, 0, 0, 0)), 1, np.int32)[0])
    return AGAIN if err in (_EAGAIN, _EINTR) else -err


@njit(cache=True)
def _accept(fns, fd):
    return _failed(fns, call5_int(fns[_ACCEPT4], fd, 0, 0, _SOCK_NONBLOCK | _SOCK_CLOEXEC, 0))


@njit(cache=True)
def _recv(fns, fd, buf, cap):
    return _failed(fns, call5(fns[_RECV], fd, buf, cap, _MSG_DONTWAIT, 0))


@njit(cache=True)
def _send(fns, fd, buf, n, sndbuf):
    """Grow the send buffer, send what it takes now; end the answer
    (``shutdown(SHUT_WR)``) if it all went.  Bytes sent, or -errno when the
    connection failed (EPIPE, ECONNRESET)."""
    val = np.empty(1, dtype=np.int32)
    val[0] = sndbuf
    call5_int(fns[_SETSOCKOPT], fd, _SOL_SOCKET, _SO_SNDBUF, val.ctypes.data, 4)
    sent = 0
    while sent < n:
        k = _failed(fns, call5(fns[_SEND], fd, buf + sent, n - sent,
                               _MSG_DONTWAIT | _MSG_NOSIGNAL, 0))
        if k == AGAIN:
            break
        if k < 0:
            return k
        sent += k
    if sent == n:
        call5_int(fns[_SHUTDOWN], fd, _SHUT_WR, 0, 0, 0)
    return sent


@njit(cache=True)
def _close(fns, fd):
    return call5_int(fns[_CLOSE], fd, 0, 0, 0, 0)


def accept_now(fd: int) -> int:
    """``accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)``: a descriptor,
    AGAIN, or -errno."""
    return _accept(_FNS, fd)


def recv_now(fd: int, buf: np.ndarray) -> int:
    """``recv(fd, buf, len(buf), MSG_DONTWAIT)``: bytes (0: the peer closed),
    AGAIN, or -errno."""
    return _recv(_FNS, fd, buf.ctypes.data, buf.size)


def send_now(fd: int, data: bytes, sndbuf: int) -> int:
    """Send what the socket takes now (its buffer grown to ``sndbuf``) and end
    the answer if it all went: bytes sent, or -errno if the connection failed."""
    view = np.frombuffer(data, dtype=np.uint8)
    return _send(_FNS, fd, view.ctypes.data, view.size, sndbuf)


def close_now(fd: int) -> None:
    """``close(fd)``: the caller has detached it from its Python socket."""
    _close(_FNS, fd)
