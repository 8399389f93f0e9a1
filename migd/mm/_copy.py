"""``folio_mc_copy()``: compiled copies of whole folios, one ``memcpy`` each.

The copy is emitted as LLVM's ``memcpy`` intrinsic, which for these sizes
becomes a call to libc's ``memcpy``: the machine's best copy routine, with the
same non-temporal-store policy as the ``memcpy`` row the bench compares with.
Rejected: numpy fancy indexing (gathers into a temporary, then scatters: 0.35x
of memcpy for 4 KiB folios against 0.54x here) and a ctypes pointer to
``memcpy`` (numba cannot cache code that embeds one).  ``nogil``: copy threads
(mtcopy, DMA channels) run these in parallel.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._page import FOLIO_CONTENT_COPIED


@intrinsic
def memcpy(typingctx, dst, src, nbytes):
    """``memcpy(dst, src, nbytes)`` on raw addresses."""
    def codegen(context, builder, signature, args):
        d, s, n = args
        i8p = ir.IntType(8).as_pointer()
        cgutils.raw_memcpy(builder, builder.inttoptr(d, i8p), builder.inttoptr(s, i8p), n, 1)
        return context.get_dummy_value()
    return types.void(types.intp, types.intp, types.intp), codegen


@numba.njit(cache=True, nogil=True)
def copy_folios(base, page_bytes, dst, src, orders):
    """Copy folio ``src[i]`` to ``dst[i]`` (pfns; ``orders[i]``) in an arena at ``base``."""
    for i in range(dst.size):
        memcpy(base + dst[i] * page_bytes, base + src[i] * page_bytes, page_bytes << orders[i])


@numba.njit(cache=True, nogil=True)
def copy_folio_prefixes(base, page_bytes, dst, src, nbytes):
    """Copy the first ``nbytes[i]`` bytes of folio ``src[i]`` to ``dst[i]`` (a
    short or failed DMA descriptor); bytes scale to the arena's ``page_bytes``
    per 4 KiB page, at least one 8-byte word when any moved."""
    for i in range(dst.size):
        b = nbytes[i] * page_bytes // 4096
        if nbytes[i] > 0 and b < 8:
            b = 8
        if b > 0:
            memcpy(base + dst[i] * page_bytes, base + src[i] * page_bytes, b)


@numba.njit(cache=True, nogil=True)
def folios_mc_copy(base, page_bytes, mem_map, dst, src):
    """The batch copy of the default migrator: copy each folio, then mark it
    FOLIO_CONTENT_COPIED (``folio_set_content_copied()``)."""
    for i in range(dst.size):
        s = src[i]
        memcpy(base + dst[i] * page_bytes, base + s * page_bytes,
               page_bytes << mem_map[s].order)
        mem_map[s].flags |= FOLIO_CONTENT_COPIED


# Never cached on disk: a cached caller (the engine's fast path) compiled in a
# process that had loaded this parallel function from the cache crashed every
# later process that loaded the caller (numba 0.68).  Uncached, it is compiled
# into each caller afresh; the cost is a compile on first direct use.
@numba.njit(parallel=True, nogil=True, cache=False)
def folios_copy_mt(base, page_bytes, mem_map, dst, src, lo, hi, nr_threads):
    """Multi-threaded copy of folios ``lo..hi`` (Zi Yan's ``copy_page_lists_mt()``).

    Fewer folios than threads: every folio is split into ``nr_threads``
    pieces, one per thread.  Otherwise each thread copies a contiguous run of
    folios.  Threads beyond the machine's CPUs share them (numba's pool).
    """
    n = hi - lo
    if n < nr_threads:
        for t in numba.prange(nr_threads):
            for u in range(lo, hi):
                size = page_bytes << mem_map[src[u]].order
                a = size * t // nr_threads
                b = size * (t + 1) // nr_threads
                memcpy(base + dst[u] * page_bytes + a, base + src[u] * page_bytes + a, b - a)
    else:  # thread t: n // T folios, one more for the first n % T threads
        q, r = n // nr_threads, n % nr_threads
        for t in numba.prange(nr_threads):
            first = lo + t * q + min(t, r)
            for u in range(first, first + q + (1 if t < r else 0)):
                memcpy(base + dst[u] * page_bytes, base + src[u] * page_bytes,
                       page_bytes << mem_map[src[u]].order)


@numba.njit(cache=True, nogil=True)
def folios_set_content_copied(mem_map, src):
    for i in range(src.size):
        mem_map[src[i]].flags |= FOLIO_CONTENT_COPIED


def compile_copies(memory) -> None:
    """Compile ``folios_copy_mt`` now (~0.7 s, holding the GIL) rather than at
    its first use, where it would stall every thread of a running daemon."""
    none = np.empty(0, dtype=np.int64)
    folios_copy_mt(memory.arena_base, memory.page_bytes, memory.mem_map, none, none, 0, 0, 1)
