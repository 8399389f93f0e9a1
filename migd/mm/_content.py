"""Page contents derived from (tenant, vpage, version), written and verified in bulk.

Word ``j`` of a page is ``key + j * RAMP_STEP`` where ``key`` is a 64-bit mix of
(tenant, vpage, version).  A copy made before unmap (stale version), a remap
before copy (old frame's bytes), a dropped or partial descriptor (other page's
key, or a torn page whose words disagree) all fail the check.  Per-byte Python
was rejected for the obvious reason; both run as compiled loops over pages.
"""

from __future__ import annotations

import numba
import numpy as np

RAMP_STEP = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def page_keys(tid: int, vpages: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """The content key of each (tenant, vpage, version)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(tid) * np.uint64(0xD6E8FEB86659FD93)
             + vpages.astype(np.uint64) * np.uint64(0xA0761D6478BD642F)
             + versions.astype(np.uint64) * np.uint64(0xE7037ED1A0B428DB))
        return _mix64(x)


def _ramp(words: int) -> np.ndarray:
    return np.arange(words, dtype=np.uint64) * RAMP_STEP


def write_pages(arena: np.ndarray, pfns: np.ndarray, keys: np.ndarray) -> None:
    """Fill each page ``pfns[i]`` with the content of ``keys[i]``."""
    _write_pages(arena, np.ascontiguousarray(pfns, dtype=np.int64),
                 np.ascontiguousarray(keys, dtype=np.uint64), _ramp(arena.shape[1]))


def verify_pages(arena: np.ndarray, pfns: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices ``i`` whose page ``pfns[i]`` does not hold ``keys[i]``'s content."""
    bad = np.empty(pfns.size, dtype=np.int64)
    n = _verify_pages(arena, np.ascontiguousarray(pfns, dtype=np.int64),
                      np.ascontiguousarray(keys, dtype=np.uint64), _ramp(arena.shape[1]), bad)
    return bad[:n]


# Compiled and GIL-free: numpy's chunked version held the GIL for each chunk,
# and mutators verify on every read, so the tree's readers (other threads)
# waited behind them.
@numba.njit(cache=True, nogil=True)
def _write_pages(arena, pfns, keys, ramp):
    words = arena.shape[1]
    for i in range(pfns.size):
        page = arena[pfns[i]]
        k = keys[i]
        for w in range(words):
            page[w] = k + ramp[w]


@numba.njit(cache=True, nogil=True)
def _verify_pages(arena, pfns, keys, ramp, bad):
    words = arena.shape[1]
    n = 0
    for i in range(pfns.size):
        page = arena[pfns[i]]
        k = keys[i]
        for w in range(words):
            if page[w] - ramp[w] != k:
                bad[n] = i
                n += 1
                break
    return n
