"""The GIL handed to a thread that asks for it, not raced for.

CPython 3.11's ``take_gil()`` sleeps on the GIL's condition for the switch
interval and only then asks the holder to drop it; every release meanwhile
wakes the waiter and starts its interval over.  The engine's thread releases
the GIL every few tens of microseconds (each GIL-free numba call, each
``epoll_wait`` of trio's loop) and is back from its call before the woken
waiter is on a CPU: the waiter loses the race and waits again.  A ``cat``'s
open waited p99 6.7 ms in the soak, at switch intervals of 0.2, 0.5 and 5 ms
alike (docs/design.md, "The GIL handed over").

So a thread about to take the GIL asks first, from compiled code, without
it: :func:`ask` counts the call and queues a pending call
(``Py_AddPendingCall()``, which needs no GIL); :func:`done` counts it done.
The main thread runs the pending call when it next takes the GIL back (3.11
sets the eval breaker for pending calls only from the main thread; the
releases that made the waiter lose are then what lets it in), or at a drop
request after a switch interval.  The pending call, :func:`c_handoff`, is
compiled (no Python runs in it, so no signal handler either): it releases the
GIL and naps until the calls counted so far are done, at most
:data:`HANDOFF_MAX_NS`, then takes the GIL back and hands nothing over for a
quarter of that: the hand-over gives away at most 4/5 of the main thread's
time, and askers arriving in its quarter race for the GIL as any thread does
(as before this module).  A flood of scrapes is bounded by the metrics
server itself (it waits as long as it ran).  When the main thread does not
hold the GIL, the asker takes it at once and the pending call finds nothing
to wait for.  A child forked while an ask was open starts with none
(``os.register_at_fork``).  Askers: the tree's open and readdir
(``sysfs._ccallbacks.c_open``, ``c_readdir``) and the metrics server's wait
(:func:`wait_readable`); the main thread never asks (it would nap against
itself).

Rejected: a shorter switch interval (the same waits: the interval restarts);
the engine's thread keeping the GIL through its short numba calls (trio's own
``epoll_wait`` releases it at every turn of its loop); serving values without
Python (each file's ``show()`` compiled, or run per period whether read or
not).  Compiled when first imported (the tree's compile does it).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading

import numpy as np
from numba import carray, cfunc, njit, types

from ._ccall import address_of, as_pointer, call5, call5_int
from .mm import atomic_add, atomic_load, ktime_get_ns

# The block's fields (int64 each): the calls counted and done (atomically, by
# any thread); the C functions the compiled code calls (their addresses are
# found here, so none is baked into numba's cache); what the main thread gave.
REQUESTED, DONE, SAVE_THREAD, RESTORE_THREAD, USLEEP, ADD_PENDING, HANDOFF_FN, POLL, \
    KEEP_UNTIL, HANDOFFS, GIVEN_NS = range(11)
BLOCK_FIELDS = 11
#: A nap of the main thread while a counted call runs (us; ~90 us on this
#: machine with the timer's slack).
NAP_US = 20
#: At most this long given away per pending call.
HANDOFF_MAX_NS = 2_000_000
#: Then the main thread hands over nothing for 1/KEEP_FOR_EVERY of that (its
#: askers race as any thread): at most 4/5 of the time is handed over.  (At
#: 1, the tree's cat p99 under 16 readers rose from 8-10 to 10-13 ms and the
#: engine's thread ran no faster: the readers then race for the GIL anyway.)
KEEP_FOR_EVERY = 4


@njit(cache=True)
def ask(block):
    """Count a call about to take the GIL and ask the main thread for it."""
    fields = carray(as_pointer(block), BLOCK_FIELDS, np.int64)
    atomic_add(block + 8 * REQUESTED, 1)
    call5_int(fields[ADD_PENDING], fields[HANDOFF_FN], block, 0, 0, 0)  # -1 when full: others asked


@njit(cache=True)
def done_at(block):
    """Count a call asked for done (it gave the GIL back, or will not hold it again)."""
    atomic_add(block + 8 * DONE, 1)


@cfunc(types.int32(types.voidptr), cache=True)
def c_handoff(arg):
    """The pending call, on the main thread holding the GIL: release it and
    nap while the calls counted so far run, then take it back."""
    block = address_of(arg)
    target = atomic_load(block + 8 * REQUESTED)
    if atomic_load(block + 8 * DONE) >= target:
        return 0  # the askers got the GIL without us
    fields = carray(arg, BLOCK_FIELDS, np.int64)
    start = ktime_get_ns()
    if start < fields[KEEP_UNTIL]:
        return 0  # the main thread's turn: the askers wait as any thread does
    tstate = call5(fields[SAVE_THREAD], 0, 0, 0, 0, 0)  # PyThreadState *
    napped = 0
    while atomic_load(block + 8 * DONE) < target and napped < HANDOFF_MAX_NS:
        call5_int(fields[USLEEP], NAP_US, 0, 0, 0, 0)
        napped = ktime_get_ns() - start
    call5(fields[RESTORE_THREAD], tstate, 0, 0, 0, 0)
    # the GIL's again (only the main thread writes these): kept a quarter of
    # what the naps gave, from now (not counting the wait to take it back)
    fields[KEEP_UNTIL] = ktime_get_ns() + napped // KEEP_FOR_EVERY
    fields[HANDOFFS] += 1
    fields[GIVEN_NS] += napped
    return 0


@njit(cache=True, nogil=True)
def _poll_then_ask(block, pollfd, timeout_ms, asks):
    """``poll()`` one descriptor without the GIL; when it is ready, ask (if ``asks``)."""
    fields = carray(as_pointer(block), BLOCK_FIELDS, np.int64)
    n = call5_int(fields[POLL], pollfd, 1, timeout_ms, 0, 0)  # one struct pollfd
    if n > 0 and asks:
        ask(block)
    return n


def _block() -> np.ndarray:
    api, libc = ctypes.pythonapi, ctypes.CDLL(None)
    block = np.zeros(BLOCK_FIELDS, dtype=np.int64)
    for field, fn in ((SAVE_THREAD, api.PyEval_SaveThread),
                      (RESTORE_THREAD, api.PyEval_RestoreThread), (USLEEP, libc.usleep),
                      (ADD_PENDING, api.Py_AddPendingCall), (POLL, libc.poll)):
        block[field] = ctypes.cast(fn, ctypes.c_void_p).value
    block[HANDOFF_FN] = c_handoff.address
    return block


#: The process's block: one count of askers for every thread that asks.
BLOCK = _block()


def _forked() -> None:
    """A child has one thread: no ask of its parent's other threads is open."""
    BLOCK[DONE] = BLOCK[REQUESTED]
    BLOCK[KEEP_UNTIL] = 0


os.register_at_fork(after_in_child=_forked)


def block_address() -> int:
    return BLOCK.ctypes.data


def _asks() -> bool:
    """Whether this thread asks: not the main thread, which runs the hand-over."""
    return threading.current_thread() is not threading.main_thread()


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait without the GIL until ``fd`` is readable (or ``timeout`` seconds
    pass, rounded up to a millisecond as ``selectors`` does), then take the
    GIL handed over.  When it returns True the caller calls :func:`done` once
    its work under the GIL is over, and before anything that may block (and
    only then: every ask is counted done once)."""
    pollfd = np.zeros(1, dtype=np.int64)  # struct pollfd {int fd; short events, revents}
    pollfd.view(np.int32)[0] = fd
    pollfd.view(np.int16)[2] = 1  # POLLIN
    ms = -1 if timeout is None else min(max(0, math.ceil(timeout * 1000)), 2**31 - 1)
    return _poll_then_ask(block_address(), pollfd.ctypes.data, ms, _asks()) > 0


def done() -> None:
    """Count the work a ready :func:`wait_readable` asked for as done."""
    if _asks():
        done_at(block_address())


def outstanding() -> int:
    """Asks not yet counted done (0 whenever no asker is between the two)."""
    return int(BLOCK[REQUESTED] - BLOCK[DONE])


def statistics() -> tuple[int, int]:
    """(pending calls that handed the GIL over, ns the main thread gave away)."""
    return int(BLOCK[HANDOFFS]), int(BLOCK[GIVEN_NS])
