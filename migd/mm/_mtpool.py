"""The copy threads of ``folios_copy_mt()``: pieces claimed, never waited for unstarted.

Zi Yan's ``copy_page_lists_mt()`` cuts a batch into ``nr_threads`` pieces
(one folio split ``T`` ways, or contiguous runs of folios) and queues one work
item per piece.  Here the pieces are the same, but each is *claimed* by the
first thread to get to it: the caller and up to ``CPUs - 1`` helper threads
spinning while copies are being asked for.  The caller never waits for a
helper that has not started (it claims the piece itself); it waits only for
pieces a helper is copying.

Why: numba's parallel region (OpenMP) ends in a barrier, so a batch of one
THP waited for the second thread however late it woke.  Rejected:
OMP_WAIT_POLICY=active (the same stalls when the other core is taken) and
numba's dynamic ``parallel_chunksize`` (still ends in the barrier); the
measurements are in docs/design.md ("The CPU copy's helper threads").

The pieces' control block is one int64 array; compiled callers find it
through the linker symbol ``migd_copy_mt_ctl`` (``llvmlite.binding.add_symbol``,
as numba's own runtime does), never through an address baked into code that
numba caches on disk.  Helpers are OS threads running a compiled, GIL-free
loop; each spins up to ``HELPER_IDLE_NS`` after its last piece, then blocks
on an Event that :func:`wake_helpers` (every multi-threaded copy plan) sets.
"""

from __future__ import annotations

import os
import threading

import llvmlite.binding as ll
import numba
import numpy as np

from ._page import page_dtype
from ._raw import (
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    cpu_relax,
    ctl_address,
    ktime_get_ns,
    load_i8,
    load_i64,
    memcpy,
)

# Control block words.
CLAIM, DONE, HELPERS, BASE, PAGE_BYTES, DST, SRC, MEM_MAP, LO, HI, SEQ, STOP, OWNER = range(13)
#: Statistics: pieces published to the helpers, and of those, copied by one.
PUBLISHED, HELPED = 13, 14
_CTL = np.zeros(16, dtype=np.int64)
ll.add_symbol("migd_copy_mt_ctl", _CTL.ctypes.data)

_ORDER_OFFSET = page_dtype.fields["order"][1]
_PAGE_SIZE = page_dtype.itemsize
_MASK20 = (1 << 20) - 1
_SEQ_MASK = (1 << 23) - 1
#: A helper spins this long after its last piece before blocking: long
#: enough to span the ~20 us gaps between batches of a fast-path slice and
#: most ~150 us gaps between slices; longer spins are preempted mid-piece
#: (docs/design.md, "The CPU copy's helper threads").
HELPER_IDLE_NS = 300_000


@numba.njit(cache=True, nogil=True)
def copy_piece(t, nr_threads, base, page_bytes, dstp, srcp, mmp, lo, hi):
    """Piece ``t`` of ``nr_threads`` of folios ``lo..hi`` (``copy_page_lists_mt()``):
    fewer folios than pieces, the ``t``-th ``1/T`` of every folio; otherwise
    ``n // T`` folios, one more for the first ``n % T`` pieces, in list order.
    ``dstp``/``srcp``: addresses of the int64 pfn lists; ``mmp``: of mem_map."""
    n = hi - lo
    if n < nr_threads:
        for u in range(lo, hi):
            s = load_i64(srcp + 8 * u)
            d = load_i64(dstp + 8 * u)
            size = page_bytes << load_i8(mmp + s * _PAGE_SIZE + _ORDER_OFFSET)
            a = size * t // nr_threads
            b = size * (t + 1) // nr_threads
            memcpy(base + d * page_bytes + a, base + s * page_bytes + a, b - a)
    else:
        q, r = n // nr_threads, n % nr_threads
        first = lo + t * q + min(t, r)
        for u in range(first, first + q + (1 if t < r else 0)):
            s = load_i64(srcp + 8 * u)
            d = load_i64(dstp + 8 * u)
            memcpy(base + d * page_bytes, base + s * page_bytes,
                   page_bytes << load_i8(mmp + s * _PAGE_SIZE + _ORDER_OFFSET))


@numba.njit(cache=True, nogil=True)
def claim_pieces(ctl, seq):
    """Claim and copy pieces of job ``seq`` until none is left; returns how many."""
    done = 0
    while True:
        w = atomic_load(ctl + 8 * CLAIM)
        nr = (w >> 20) & _MASK20
        t = w & _MASK20
        if (w >> 40) != seq or t >= nr:
            return done
        if atomic_cas(ctl + 8 * CLAIM, w, w + 1) != w:
            continue
        copy_piece(t, nr, load_i64(ctl + 8 * BASE), load_i64(ctl + 8 * PAGE_BYTES),
                   load_i64(ctl + 8 * DST), load_i64(ctl + 8 * SRC),
                   load_i64(ctl + 8 * MEM_MAP), load_i64(ctl + 8 * LO), load_i64(ctl + 8 * HI))
        atomic_add(ctl + 8 * DONE, 1)
        done += 1


@numba.njit(cache=False, nogil=True)
def folios_copy_mt(base, page_bytes, mem_map, dst, src, lo, hi, nr_threads):
    """Multi-threaded copy of folios ``lo..hi`` (Zi Yan's ``copy_page_lists_mt()``):
    ``nr_threads`` pieces, each copied by whichever thread claims it first;
    with no helper awake, the caller copies them all, in order."""
    ctl = ctl_address()
    mmp = mem_map.ctypes.data
    # No helper awake, or another caller (thread) owns the control block:
    # every piece here, in order.
    if (nr_threads <= 1 or atomic_load(ctl + 8 * HELPERS) == 0
            or atomic_cas(ctl + 8 * OWNER, 0, 1) != 0):
        for t in range(nr_threads):
            copy_piece(t, nr_threads, base, page_bytes, np.int64(dst.ctypes.data),
                       np.int64(src.ctypes.data), np.int64(mmp), lo, hi)
        return
    seq = (load_i64(ctl + 8 * SEQ) + 1) & _SEQ_MASK
    atomic_store(ctl + 8 * SEQ, seq)
    atomic_store(ctl + 8 * BASE, base)
    atomic_store(ctl + 8 * PAGE_BYTES, page_bytes)
    atomic_store(ctl + 8 * DST, dst.ctypes.data)
    atomic_store(ctl + 8 * SRC, src.ctypes.data)
    atomic_store(ctl + 8 * MEM_MAP, mmp)
    atomic_store(ctl + 8 * LO, lo)
    atomic_store(ctl + 8 * HI, hi)
    atomic_store(ctl + 8 * DONE, seq << 20)
    atomic_store(ctl + 8 * CLAIM, (seq << 40) | (nr_threads << 20))  # publish
    atomic_add(ctl + 8 * PUBLISHED, nr_threads)
    claim_pieces(ctl, seq)
    while atomic_load(ctl + 8 * DONE) != (seq << 20) | nr_threads:
        cpu_relax()  # only pieces a helper is copying are waited for
    atomic_store(ctl + 8 * OWNER, 0)


@numba.njit(cache=True, nogil=True)
def helper_loop(ctl, idle_ns):
    """A helper: claim pieces of each new job until ``idle_ns`` pass with
    nothing to claim, or STOP."""
    atomic_add(ctl + 8 * HELPERS, 1)
    last = ktime_get_ns()
    spins = 0
    while atomic_load(ctl + 8 * STOP) == 0:
        w = atomic_load(ctl + 8 * CLAIM)
        if (w & _MASK20) < ((w >> 20) & _MASK20):
            got = claim_pieces(ctl, w >> 40)
            if got:
                atomic_add(ctl + 8 * HELPED, got)
                last = ktime_get_ns()
                continue
        cpu_relax()
        spins += 1
        if spins % 256 == 0 and ktime_get_ns() - last > idle_ns:
            break
    atomic_add(ctl + 8 * HELPERS, -1)


def copying_threads(threads: int) -> int:
    """Threads that actually copy a job of ``threads`` pieces: the caller and
    at most CPUs - 1 helpers."""
    return min(threads, os.cpu_count() or 1)


def cpu_threads_busy(threads: int, virtual: bool) -> int:
    """CPUs a copy on ``threads`` threads keeps busy for its duration: its CPU
    seconds are that many times its wall (or modelled) seconds.  The modelled
    machine has a CPU for each thread; here the caller and at most CPUs - 1
    helpers copy."""
    return threads if virtual else copying_threads(threads)


class _Helpers:
    """The helper threads (daemon threads; at most CPUs - 1)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[threading.Event] = []

    def wake(self, threads: int) -> None:
        want = copying_threads(threads) - 1
        if len(self.events) < want:
            with self.lock:
                while len(self.events) < want:
                    ev = threading.Event()
                    self.events.append(ev)
                    threading.Thread(target=self._run, args=(ev,), daemon=True,
                                     name=f"migd-copy-mt-{len(self.events)}").start()
        for ev in self.events[:want]:
            if not ev.is_set():
                ev.set()

    @staticmethod
    def _run(ev: threading.Event) -> None:
        addr = int(_CTL.ctypes.data)
        while True:
            ev.wait()
            ev.clear()
            helper_loop(addr, HELPER_IDLE_NS)


_HELPERS = _Helpers()


def _after_fork_in_child() -> None:
    """A forked child (sweep workers) has none of its parent's helper threads:
    start afresh, so it gets its own rather than counting on ghosts."""
    global _HELPERS
    _HELPERS = _Helpers()
    _CTL[HELPERS] = 0
    _CTL[OWNER] = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def wake_helpers(threads: int) -> None:
    """Before a copy on ``threads`` threads: wake up to ``threads - 1`` helpers
    (cheap when they are awake already)."""
    if threads > 1:
        _HELPERS.wake(threads)

