"""A channel's copy thread as compiled code: its control block, its loop, and
the compiled caller's side of a hand-off (``dma_chan_post`` / ``dma_chan_wait``).

Each channel owns one row of int64 words (:data:`CTL_WORDS`, a cache line
pair apart from the next channel's).  Its copy thread spends its life in
:func:`dma_chan_serve`, GIL-free: it copies each slice of folios posted to
its row (``REQ`` bumped past ``ACK``), answers by setting ``ACK``, spins a
little for the next one and then sleeps in ``futex()`` until kicked.  Python
work for the thread (the trio-side channel's one hand-off per queue, see
``_thread``) is asked for with ``PYJOB``: the loop returns, the job runs, the
loop is entered again.

Two kinds of caller post slices:

- the channel's trio task (the general path), through ``CopyThread.run``:
  one Python hand-off per queue it takes, ~25 us round trip;
- the engine's compiled fast path (``_kernels.migrate_pages_batch_fast``) for
  a clean dcbm batch on the real clock: ``dma_chan_post`` per channel, then
  ``dma_chan_wait`` per channel, all in compiled code, no GIL and no event
  loop turn — a few microseconds per batch against ~370 us of Python and
  thread hand-offs per 2 MiB batch measured before (dcbm:1 at 0.37x of the
  vanilla path for 2M folios).  The copy is still the channel thread's: the
  caller waits, as ``wait_for_completion_timeout()`` does, it never copies.

The sleep/kick protocol is the classic one: the thread announces ``SLEEPING``
then looks for work once more; a poster stores ``REQ`` then looks at
``SLEEPING``.  Both are sequentially consistent, so either the thread sees
the work or the poster sees the sleeper and wakes it.  Rejected: a Python
``threading.Event`` per channel (a compiled caller cannot set it) and
spinning forever (16 idle channel threads would eat a 2-CPU machine).
"""

from __future__ import annotations

import numba
import numpy as np

from ..mm._mtpool import copy_piece
from ..mm._raw import (
    atomic_cas,
    atomic_load,
    atomic_store,
    cpu_relax,
    futex_wait,
    futex_wake,
    ktime_get_ns,
    sched_yield,
)

# Control words of a channel.
REQ, ACK, SLEEPING, PYJOB, STOP, SRC, DST, MMP, BASE, PAGE_BYTES, LO, HI, T_DONE, CLAIMED, \
    WAITING = range(15)
#: Words per channel row: 128 bytes, so two channels' words never share a cache line.
CTL_WORDS = 16
#: What :func:`dma_chan_serve` returns for.
SERVE_PYJOB, SERVE_STOP = 1, 2
#: A channel thread spins this long after its last slice before it sleeps:
#: the gap between two batches of a fast-path slice is the unmap and move of
#: one batch (~10 us for a THP), and between two fast-path calls ~150 us of
#: Python.  Sleeping sooner costs a futex wake per batch (~30-60 us here).
IDLE_SPIN_NS = 300_000
#: A waiting caller yields its CPU every this many spins: on 2 CPUs shared
#: with 16 channel threads the one it waits for may need it.
YIELD_EVERY = 64
#: A sleeping waiter looks at its deadline this often (a dead thread never wakes it).
WAIT_SLICE_NS = 10_000_000


def new_ctl(nr_channels: int) -> np.ndarray:
    """The control rows of a device's channels."""
    return np.zeros((nr_channels, CTL_WORDS), dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def dma_chan_kick(ctl, word):
    """Set ``word`` of the channel at ``ctl`` (``PYJOB``, ``STOP``, or ``REQ``
    after bumping it elsewhere) and wake its thread if it sleeps."""
    if word != REQ:
        atomic_store(ctl + 8 * word, 1)
    if atomic_load(ctl + 8 * SLEEPING) != 0:
        atomic_store(ctl + 8 * SLEEPING, 0)
        futex_wake(ctl + 8 * SLEEPING, 1)


@numba.njit(cache=True, nogil=True)
def dma_chan_serve(ctl, idle_ns):
    """The channel thread's loop: copy each posted slice, spin ``idle_ns``
    after it for the next, else sleep; returns ``SERVE_PYJOB`` or ``SERVE_STOP``."""
    spin_until = 0  # entered from Python: nothing to spin for
    spins = 0
    while True:
        if atomic_load(ctl + 8 * STOP) != 0:
            return SERVE_STOP
        if atomic_load(ctl + 8 * PYJOB) != 0:
            return SERVE_PYJOB
        req = atomic_load(ctl + 8 * REQ)
        if req != atomic_load(ctl + 8 * ACK):
            if atomic_cas(ctl + 8 * CLAIMED, req - 1, req) == req - 1:  # not cancelled
                copy_piece(0, 1, atomic_load(ctl + 8 * BASE), atomic_load(ctl + 8 * PAGE_BYTES),
                           atomic_load(ctl + 8 * DST), atomic_load(ctl + 8 * SRC),
                           atomic_load(ctl + 8 * MMP), atomic_load(ctl + 8 * LO),
                           atomic_load(ctl + 8 * HI))
            now = ktime_get_ns()
            atomic_store(ctl + 8 * T_DONE, now)
            atomic_store(ctl + 8 * ACK, req)
            if atomic_load(ctl + 8 * WAITING) != 0:  # the poster sleeps: complete()
                atomic_store(ctl + 8 * WAITING, 0)
                futex_wake(ctl + 8 * WAITING, 1)
            spin_until = now + idle_ns
            spins = 0
            continue
        cpu_relax()
        spins += 1
        if spins % YIELD_EVERY == 0 or spin_until == 0:
            sched_yield()
            if ktime_get_ns() > spin_until:
                atomic_store(ctl + 8 * SLEEPING, 1)
                if (atomic_load(ctl + 8 * STOP) == 0 and atomic_load(ctl + 8 * PYJOB) == 0
                        and atomic_load(ctl + 8 * REQ) == atomic_load(ctl + 8 * ACK)):
                    futex_wait(ctl + 8 * SLEEPING, 1, 0)  # until kicked
                atomic_store(ctl + 8 * SLEEPING, 0)
                spin_until = 0


@numba.njit(cache=True, nogil=True)
def dma_chan_post(ctl, base, page_bytes, dstp, srcp, mmp, lo, hi):
    """Submit folios ``lo..hi`` of the pfn lists at ``srcp``/``dstp`` to the
    channel at ``ctl`` and issue them (``dmaengine_submit()`` +
    ``dma_async_issue_pending()``); returns the request's number."""
    atomic_store(ctl + 8 * BASE, base)
    atomic_store(ctl + 8 * PAGE_BYTES, page_bytes)
    atomic_store(ctl + 8 * DST, dstp)
    atomic_store(ctl + 8 * SRC, srcp)
    atomic_store(ctl + 8 * MMP, mmp)
    atomic_store(ctl + 8 * LO, lo)
    atomic_store(ctl + 8 * HI, hi)
    req = atomic_load(ctl + 8 * REQ) + 1
    atomic_store(ctl + 8 * REQ, req)
    dma_chan_kick(ctl, REQ)
    return req


@numba.njit(cache=True, nogil=True)
def dma_chan_wait(ctl, req, deadline_ns, spin):
    """``wait_for_completion_timeout()`` on request ``req``: True when done.

    ``spin``: wait on the CPU (when a CPU is free for it); else sleep in
    ``futex()`` until the thread's ``complete()`` wakes it, as the kernel's
    waiter sleeps: a spinning waiter would take a CPU from the channels it
    waits for (dcbm:2 on 2 CPUs ran at 0.59x of the vanilla path spinning).

    At ``deadline_ns`` the request is terminated as ``dmaengine_terminate_sync()``
    would: if the thread has not started it, it never will (``CLAIMED`` taken
    here first) and False is returned; if it has, it is waited for, so no
    write lands after the CPU's fallback copy (a started slice is bounded)."""
    spins = 0
    while atomic_load(ctl + 8 * ACK) != req:
        if spin:
            cpu_relax()
            spins += 1
            if spins % YIELD_EVERY:
                continue
            sched_yield()
        else:
            atomic_store(ctl + 8 * WAITING, 1)
            if atomic_load(ctl + 8 * ACK) != req:
                futex_wait(ctl + 8 * WAITING, 1, WAIT_SLICE_NS)  # woken by the ACK
            atomic_store(ctl + 8 * WAITING, 0)
        if ktime_get_ns() > deadline_ns:
            if atomic_cas(ctl + 8 * CLAIMED, req - 1, req) == req - 1:
                return False  # cancelled before it started
            deadline_ns = 1 << 62  # started: wait for it to finish
    return True
