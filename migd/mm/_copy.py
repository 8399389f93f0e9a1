"""``folio_mc_copy()``: compiled copies of whole folios, one ``memcpy`` each.

The copy is emitted as LLVM's ``memcpy`` intrinsic, which for these sizes
becomes a call to libc's ``memcpy``: the machine's best copy routine, with the
same non-temporal-store policy as the ``memcpy`` row the bench compares with.
Rejected: numpy fancy indexing (gathers into a temporary, then scatters: slower
for 4 KiB folios, docs/design.md "Folio copies") and a ctypes pointer to
``memcpy`` (numba cannot cache code that embeds one).  ``nogil``: copy threads
(a multi-threaded CPU copy, DMA channels) run these in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

from ._mtpool import cpu_threads_busy, folios_copy_mt, wake_helpers
from ._page import FOLIO_CONTENT_COPIED
from ._raw import memcpy

__all__ = ["copy_folio_prefixes", "copy_folios", "cpu_threads_busy", "folios_copy_mt",
           "folios_mc_copy", "folios_set_content_copied", "memcpy", "wake_helpers"]


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


@numba.njit(cache=True, nogil=True)
def folios_set_content_copied(mem_map, src):
    for i in range(src.size):
        mem_map[src[i]].flags |= FOLIO_CONTENT_COPIED


def compile_copies(memory) -> None:
    """Compile ``folios_copy_mt`` now (uncached: it names the copy threads'
    control block by a linker symbol) rather than at its first use, where it
    would stall every thread of a running daemon."""
    none = np.empty(0, dtype=np.int64)
    folios_copy_mt(memory.arena_base, memory.page_bytes, memory.mem_map, none, none, 0, 0, 1)
