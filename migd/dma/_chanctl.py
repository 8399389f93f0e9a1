"""A channel's copy thread as compiled code: its control block, its loop, and
the compiled caller's side of a hand-off (``dma_chan_post`` / ``dma_chan_wait``).

Each channel owns one row of int64 words (:data:`CTL_WORDS`, 256 bytes
apart from the next channel's).  Its copy thread spends its life in
:func:`dma_chan_serve`, GIL-free: it copies each slice of folios posted to
its row (``COOKIE`` bumped past ``COMPLETED_COOKIE``, as dmaengine's
``chan->cookie`` runs ahead of ``chan->completed_cookie``), answers by setting
``COMPLETED_COOKIE``, spins for
the next one while the poster is on a CPU, and otherwise sleeps in
``futex()`` until kicked.  A waiting poster likewise spins only while the
channel's thread is on a CPU, as the kernel's mutex spins on its owner
(``mutex_spin_on_owner()``); "on a CPU" is read from the other thread's
CPU-time clock (``CPUCLOCK``, ``POSTER_CPUCLOCK``).  Python
work for the thread (the trio-side channel's one hand-off per queue, see
``_thread``) is asked for with ``PYJOB``: the loop returns, the job runs, the
loop is entered again.

Two kinds of caller post slices:

- the channel's trio task (the general path), through ``CopyThread.run``:
  one Python hand-off per queue it takes, ~25 us round trip;
- the engine's compiled fast path (``_kernels.migrate_pages_batch_fast``) for
  a clean DMA batch on the real clock, through :func:`folios_copy_dma`:
  ``dma_chan_post`` per channel, then ``dma_chan_wait`` per channel, all in
  compiled code, no GIL and no event loop turn — a few microseconds per batch
  against ~370 us of Python and thread hand-offs per 2 MiB batch (figures in
  docs/design.md).  The copy is still the channel thread's: the caller waits,
  as ``wait_for_completion_timeout()`` does, it never copies.

The sleep/kick protocol is the classic one: the thread announces ``SLEEPING``
then looks for work once more; a poster stores ``COOKIE`` then looks at
``SLEEPING``.  Both are sequentially consistent, so either the thread sees
the work or the poster sees the sleeper and wakes it.  Rejected: a Python
``threading.Event`` per channel (a compiled caller cannot set it) and
spinning forever (16 idle channel threads would eat a 2-CPU machine).
"""

from __future__ import annotations

import numba
import numpy as np

from ..mm import (
    PAGE_SIZE,
    atomic_cas,
    atomic_load,
    atomic_store,
    copy_piece,
    cpu_relax,
    folios_set_content_copied,
    futex_wait,
    futex_wake,
    ktime_get_ns,
    thread_cpu_clock_ns,
)

# Control words of a channel.
# ``COOKIE``/``COMPLETED_COOKIE``: the last slice posted and the last one done
# (dmaengine's ``chan->cookie`` and ``chan->completed_cookie``); ``STARTED``: the
# last slice the thread took up, or the waiter cancelled before it could.
(COOKIE, COMPLETED_COOKIE, SLEEPING, PYJOB, STOP, SRC, DST, MMP, BASE, PAGE_BYTES, LO, HI,
 T_DONE, STARTED, WAITING, CPUCLOCK, POSTER_CPUCLOCK) = range(17)
#: Words per channel row: 256 bytes, so two channels' words never share a cache line.
CTL_WORDS = 32
#: What :func:`dma_chan_serve` returns for.
SERVE_PYJOB, SERVE_STOP = 1, 2
#: A channel thread spins up to this long after its last slice for the next
#: one, and only while the thread that posted it is on a CPU (preparing the
#: next batch): the gap between two batches of a fast-path call is the unmap
#: and move of one batch (~10 us for a THP, ~400 us for 512 4K folios).
#: Sleeping at once costs a futex wake per batch (~30-60 us here); spinning
#: while the poster is off its CPU only burns the CPU time (and, to the
#: scheduler, the thread's claim on a CPU) that it will need for the copy.
IDLE_SPIN_NS = 1_000_000
#: A spinning thread looks at the clock every this many spins.
YIELD_EVERY = 64
#: A spinning waiter looks this often whether the channel thread is on a CPU
#: (its CPU-time clock, ``CPUCLOCK``, advancing with the wall clock) ...
ON_CPU_CHECK_NS = 10_000
#: ... once the thread had this long to wake up and take the slice.
PICKUP_NS = 60_000
#: A sleeping waiter looks at its deadline this often (a dead thread never wakes it).
WAIT_SLICE_NS = 10_000_000


def new_ctl(nr_channels: int) -> np.ndarray:
    """The control rows of a device's channels."""
    return np.zeros((nr_channels, CTL_WORDS), dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def dma_chan_kick(ctl, word):
    """Set ``word`` of the channel at ``ctl`` (``PYJOB``, ``STOP``, or ``COOKIE``
    after bumping it elsewhere) and wake its thread if it sleeps."""
    if word != COOKIE:
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
    t_check = cpu_check = 0
    while True:
        if atomic_load(ctl + 8 * STOP) != 0:
            return SERVE_STOP
        if atomic_load(ctl + 8 * PYJOB) != 0:
            return SERVE_PYJOB
        cookie = atomic_load(ctl + 8 * COOKIE)
        if cookie != atomic_load(ctl + 8 * COMPLETED_COOKIE):
            if atomic_cas(ctl + 8 * STARTED, cookie - 1, cookie) == cookie - 1:  # not cancelled
                copy_piece(np.int64(0), np.int64(1), atomic_load(ctl + 8 * BASE),
                           atomic_load(ctl + 8 * PAGE_BYTES), atomic_load(ctl + 8 * DST),
                           atomic_load(ctl + 8 * SRC), atomic_load(ctl + 8 * MMP),
                           atomic_load(ctl + 8 * LO), atomic_load(ctl + 8 * HI))
            now = ktime_get_ns()
            atomic_store(ctl + 8 * T_DONE, now)
            atomic_store(ctl + 8 * COMPLETED_COOKIE, cookie)
            if atomic_load(ctl + 8 * WAITING) != 0:  # the poster sleeps: complete()
                atomic_store(ctl + 8 * WAITING, 0)
                futex_wake(ctl + 8 * WAITING, 1)
            spin_until = now + idle_ns
            spins = 0
            t_check, cpu_check = now, thread_cpu_clock_ns(atomic_load(ctl + 8 * POSTER_CPUCLOCK))
            continue
        cpu_relax()
        spins += 1
        if spins % YIELD_EVERY == 0 or spin_until == 0:
            now = ktime_get_ns()
            if spin_until and now - t_check >= ON_CPU_CHECK_NS:
                cpu = thread_cpu_clock_ns(atomic_load(ctl + 8 * POSTER_CPUCLOCK))
                if 2 * (cpu - cpu_check) < now - t_check:
                    spin_until = now  # the poster is off its CPU: no batch is coming soon
                t_check, cpu_check = now, cpu
            if now >= spin_until:
                atomic_store(ctl + 8 * SLEEPING, 1)
                idle = atomic_load(ctl + 8 * COOKIE) == atomic_load(ctl + 8 * COMPLETED_COOKIE)
                if idle and atomic_load(ctl + 8 * STOP) == 0 and atomic_load(ctl + 8 * PYJOB) == 0:
                    futex_wait(ctl + 8 * SLEEPING, 1, 0)  # until kicked
                atomic_store(ctl + 8 * SLEEPING, 0)
                spin_until = 0


@numba.njit(cache=True, nogil=True)
def dma_chan_post(ctl, base, page_bytes, dstp, srcp, mmp, lo, hi, cpuclock):
    """Submit folios ``lo..hi`` of the pfn lists at ``srcp``/``dstp`` to the
    channel at ``ctl`` and issue them (``dmaengine_submit()`` +
    ``dma_async_issue_pending()``); returns its cookie.
    ``cpuclock``: the poster's CPU-time clock (see ``IDLE_SPIN_NS``)."""
    atomic_store(ctl + 8 * POSTER_CPUCLOCK, cpuclock)
    atomic_store(ctl + 8 * BASE, base)
    atomic_store(ctl + 8 * PAGE_BYTES, page_bytes)
    atomic_store(ctl + 8 * DST, dstp)
    atomic_store(ctl + 8 * SRC, srcp)
    atomic_store(ctl + 8 * MMP, mmp)
    atomic_store(ctl + 8 * LO, lo)
    atomic_store(ctl + 8 * HI, hi)
    cookie = atomic_load(ctl + 8 * COOKIE) + 1
    atomic_store(ctl + 8 * COOKIE, cookie)
    dma_chan_kick(np.int64(ctl), np.int64(COOKIE))
    return cookie


@numba.njit(cache=True, nogil=True)
def dma_chan_wait(ctl, cookie, timeout_ns, spin):
    """``wait_for_completion_timeout()`` on the slice ``cookie``: True when done.

    Spins (``spin``: when a CPU is free for the waiter beside the channels'
    threads) only while the channel thread is on a CPU, as the kernel's
    mutex spins only while its owner is (``mutex_spin_on_owner()``): its
    CPU-time clock must advance at least half as fast as the wall clock;
    otherwise sleeps
    in ``futex()`` until the thread's ``complete()`` wakes it, as the
    kernel's waiter sleeps.  Measured on 2 CPUs (docs/design.md): sleeping at
    once costs a wake-up per batch (one channel, 2M folios: 0.79x of the
    vanilla path against 1.0x spinning); spinning regardless of the thread
    lost whole scheduler ticks (~4 ms a batch) with two CPU hogs running, the
    spinner holding the CPU the preempted thread needed (two channels at
    65536 pages fell to 0.59x).

    After ``timeout_ns`` the request is terminated as ``dmaengine_terminate_sync()``
    would: if the thread has not started it, it never will (``STARTED`` taken
    here first) and False is returned; if it has, it is waited for, so no
    write lands after the CPU's fallback copy (a started slice is bounded)."""
    start = ktime_get_ns()
    deadline = start + timeout_ns
    cpuclock = atomic_load(ctl + 8 * CPUCLOCK)
    t_check = start
    cpu_check = thread_cpu_clock_ns(cpuclock) if spin else 0
    while atomic_load(ctl + 8 * COMPLETED_COOKIE) != cookie:
        now = ktime_get_ns()
        if now >= deadline:
            if atomic_cas(ctl + 8 * STARTED, cookie - 1, cookie) == cookie - 1:
                return False  # cancelled before it started
            deadline = 1 << 62  # started: wait for it to finish
            continue
        if spin and now - t_check >= ON_CPU_CHECK_NS:
            cpu = thread_cpu_clock_ns(cpuclock)
            if 2 * (cpu - cpu_check) < now - t_check and now - start >= PICKUP_NS:
                spin = False  # the thread is off its CPU: sleep until it is done
            t_check, cpu_check = now, cpu
        if spin:
            for _ in range(YIELD_EVERY):
                if atomic_load(ctl + 8 * COMPLETED_COOKIE) == cookie:
                    break
                cpu_relax()
            continue
        atomic_store(ctl + 8 * WAITING, 1)
        if atomic_load(ctl + 8 * COMPLETED_COOKIE) != cookie:  # woken by the completion
            futex_wait(ctl + 8 * WAITING, 1, min(WAIT_SLICE_NS, deadline - now))
        atomic_store(ctl + 8 * WAITING, 0)
    return True


#: Columns of the per-channel counts :func:`folios_copy_dma` keeps: descriptors,
#: bytes, busy ns, and the completion time of the channel's slice of the last batch.
CH_DESCS, CH_BYTES, CH_BUSY_NS, CH_LAST_DONE, NR_CH_COLUMNS = range(5)


@numba.njit(cache=True, nogil=True)
def folios_copy_dma(base, page_bytes, mem_map, dst, folios, lo, hi, chan_ctl, chan_stats,
                    timeout_ns, nr_cpus, cpuclock):
    """RFC v6's DMA batch copy (``folios_copy_dma()``) of a clean batch, from
    compiled code: ``min(channels, nr_folios)`` contiguous slices (``nr*i/c``),
    each posted to its channel's copy thread and issued at once, then waited
    for channel by channel (``wait_for_completion_timeout()``); only when every
    channel finished is every folio marked FOLIO_CONTENT_COPIED.  The caller
    never copies: it spins while a CPU is free for it beside the channels'
    threads (``nch < nr_cpus``) and the thread is seen copying, else sleeps
    (:func:`dma_chan_wait`).
    Each wait has its own ``timeout_ns``, as each channel's
    ``wait_for_completion_timeout()`` has.  Returns how many channels the
    batch claimed, negated when one timed out (then none is marked: the move
    loop copies them all)."""
    nr = hi - lo
    nch = min(chan_ctl.shape[0], nr)
    dstp = dst.ctypes.data
    srcp = folios.ctypes.data
    mmp = mem_map.ctypes.data
    cookies = np.empty(nch, dtype=np.int64)
    t_post = np.empty(nch, dtype=np.int64)
    for c in range(nch):
        a = lo + nr * c // nch
        b = lo + nr * (c + 1) // nch
        t_post[c] = ktime_get_ns()
        cookies[c] = dma_chan_post(chan_ctl[c].ctypes.data, base, page_bytes, dstp, srcp, mmp,
                                a, b, cpuclock)
    spin = nch < nr_cpus
    ok = True
    for c in range(nch):
        ctl = chan_ctl[c].ctypes.data
        # after a timeout the others are terminated (timeout 0): cancelled if
        # not started, else waited for, as dmaengine_terminate_sync() does
        if not dma_chan_wait(ctl, cookies[c], timeout_ns if ok else 0, spin and ok):
            ok = False
            continue  # never started: nothing to book
        a = lo + nr * c // nch
        b = lo + nr * (c + 1) // nch
        nbytes = 0
        for u in range(a, b):
            nbytes += PAGE_SIZE << mem_map[folios[u]].order
        done = chan_ctl[c, T_DONE]
        st = chan_stats[c]
        st[CH_DESCS] += b - a
        st[CH_BYTES] += nbytes
        st[CH_BUSY_NS] += done - t_post[c]
        st[CH_LAST_DONE] = done
    if not ok:
        return -nch
    folios_set_content_copied(mem_map, folios[lo:hi])
    return nch
