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
(``Py_AddPendingCall()``, which needs no GIL; the main thread runs it at its
next eval-breaker check); :func:`done` counts it done.  The pending call,
:func:`c_handoff`, is compiled (no Python runs in it, so no signal handler
either): it releases the GIL and naps until every counted call is done, at
most :data:`HANDOFF_MAX_NAPS` naps, then takes the GIL back.  When the main
thread does not hold the GIL, the asker takes it at once and the pending call,
run later, finds nothing to wait for.  Askers: the tree's open
(``sysfs._ccallbacks.c_open``) and the metrics server's wait
(:func:`wait_readable`).

Rejected: a shorter switch interval (the same waits: the interval restarts);
the engine's thread keeping the GIL through its short numba calls (trio's own
``epoll_wait`` releases it at every turn of its loop); serving values without
Python (each file's ``show()`` compiled, or run per period whether read or
not).  Compiled when first imported (the tree's compile does it).
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._ccall import as_pointer, call_pp

# The block's fields (int64 each): the calls counted and done (atomically, by
# any thread); the C functions the compiled code calls (their addresses are
# found here, so none is baked into numba's cache); what the main thread gave.
REQUESTED, DONE, SAVE_THREAD, RESTORE_THREAD, USLEEP, ADD_PENDING, HANDOFF_FN, POLL, \
    HANDOFFS, NAPS = range(10)
BLOCK_FIELDS = 10
#: A nap of the main thread while a counted call runs (us).
NAP_US = 20
#: At most this many naps per pending call (~2-3 ms with the timer's slack):
#: each asker queues its own, so a stream of askers takes turns with the
#: engine's thread rather than starving it.
HANDOFF_MAX_NAPS = 50

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


@intrinsic
def _address(typingctx, ptr):
    """A ``void *`` as an address."""
    def codegen(context, builder, sig, args):
        return builder.ptrtoint(args[0], _I64)
    return types.int64(types.voidptr), codegen


@intrinsic
def _atomic_add(typingctx, addr, value):
    """``__atomic_fetch_add((int64_t *)addr, value, __ATOMIC_SEQ_CST)``."""
    def codegen(context, builder, sig, args):
        return builder.atomic_rmw("add", builder.inttoptr(args[0], _I64.as_pointer()),
                                  args[1], "seq_cst")
    return types.int64(types.int64, types.int64), codegen


@intrinsic
def _atomic_load(typingctx, addr):
    """``__atomic_load_n((int64_t *)addr, __ATOMIC_SEQ_CST)``: loaded again
    at each turn of a loop, whatever the optimiser knows."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(builder.inttoptr(args[0], _I64.as_pointer()), "seq_cst", 8)
    return types.int64(types.int64), codegen


@intrinsic
def _call_save_thread(typingctx, fn):
    """``PyThreadState *PyEval_SaveThread(void)`` at ``fn``: the state's address."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(cgutils.voidptr_t, [])
        state = builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return builder.ptrtoint(state, _I64)
    return types.int64(types.int64), codegen


@intrinsic
def _call_restore_thread(typingctx, fn, tstate):
    """``void PyEval_RestoreThread(PyThreadState *)`` at ``fn``."""
    def codegen(context, builder, signature, args):
        vp = cgutils.voidptr_t
        fnty = ir.FunctionType(ir.VoidType(), [vp])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                     [builder.inttoptr(args[1], vp)])
        return context.get_dummy_value()
    return types.none(types.int64, types.int64), codegen


@intrinsic
def _call_int(typingctx, fn, a, b):
    """Call ``int fn(int64_t a, int b)`` at ``fn`` (``usleep(us)`` takes ``a``
    only: the second argument register is ignored)."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(_I32, [_I64, _I32])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                            [args[1], builder.trunc(args[2], _I32)])
    return types.int32(types.int64, types.int64, types.int64), codegen


@njit(cache=True)
def ask(block):
    """Count a call about to take the GIL and ask the main thread for it."""
    fields = carray(as_pointer(block), BLOCK_FIELDS, np.int64)
    _atomic_add(block + 8 * REQUESTED, 1)
    call_pp(fields[ADD_PENDING], fields[HANDOFF_FN], block)  # -1 when full: others asked


@njit(cache=True)
def done_at(block):
    """Count a call asked for done (it gave the GIL back, or will not hold it again)."""
    _atomic_add(block + 8 * DONE, 1)


@cfunc(types.int32(types.voidptr), cache=True)
def c_handoff(arg):
    """The pending call, on the main thread holding the GIL: release it and
    nap while a counted call runs, then take it back."""
    block = _address(arg)
    if _atomic_load(block + 8 * REQUESTED) == _atomic_load(block + 8 * DONE):
        return 0  # the askers got the GIL without us
    fields = carray(arg, BLOCK_FIELDS, np.int64)
    tstate = _call_save_thread(fields[SAVE_THREAD])
    naps = 0
    while (naps < HANDOFF_MAX_NAPS and _atomic_load(block + 8 * REQUESTED)
           != _atomic_load(block + 8 * DONE)):
        _call_int(fields[USLEEP], NAP_US, 0)
        naps += 1
    _call_restore_thread(fields[RESTORE_THREAD], tstate)
    fields[HANDOFFS] += 1  # the GIL's again: only the main thread writes these
    fields[NAPS] += naps
    return 0


@intrinsic
def _call_poll(typingctx, fn, pollfd, timeout_ms):
    """``int poll(struct pollfd *fds, nfds_t 1, int timeout_ms)`` at ``fn``."""
    def codegen(context, builder, signature, args):
        vp = cgutils.voidptr_t
        fnty = ir.FunctionType(_I32, [vp, _I64, _I32])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                            [builder.inttoptr(args[1], vp), ir.Constant(_I64, 1),
                             builder.trunc(args[2], _I32)])
    return types.int32(types.int64, types.int64, types.int64), codegen


@njit(cache=True, nogil=True)
def _poll_then_ask(block, pollfd, timeout_ms):
    """``poll()`` one descriptor without the GIL; when it is ready, ask."""
    fields = carray(as_pointer(block), BLOCK_FIELDS, np.int64)
    n = _call_poll(fields[POLL], pollfd, timeout_ms)
    if n > 0:
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


def block_address() -> int:
    return BLOCK.ctypes.data


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait without the GIL until ``fd`` is readable (or ``timeout`` seconds
    pass), then take the GIL handed over.  When it returns True the caller
    calls :func:`done` once its work under the GIL is over (and only then:
    every ask is counted done once)."""
    pollfd = np.zeros(1, dtype=np.int64)  # struct pollfd {int fd; short events, revents}
    pollfd.view(np.int32)[0] = fd
    pollfd.view(np.int16)[2] = 1  # POLLIN
    ms = -1 if timeout is None else min(max(0, int(timeout * 1000)), 2**31 - 1)
    return _poll_then_ask(block_address(), pollfd.ctypes.data, ms) > 0


def done() -> None:
    """Count the work a ready :func:`wait_readable` asked for as done."""
    done_at(block_address())


def outstanding() -> int:
    """Asks not yet counted done (0 whenever no asker is between the two)."""
    return int(BLOCK[REQUESTED] - BLOCK[DONE])


def statistics() -> tuple[int, int]:
    """(pending calls that handed the GIL over, naps taken meanwhile)."""
    return int(BLOCK[HANDOFFS]), int(BLOCK[NAPS])
