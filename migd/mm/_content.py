"""Page contents derived from (tenant, vpage, version), written and verified in bulk.

Word ``j`` of a page is ``key + j * RAMP_STEP`` where ``key`` is a 64-bit mix of
(tenant, vpage, version).  A copy made before unmap (stale version), a remap
before copy (old frame's bytes), a dropped or partial descriptor (other page's
key, or a torn page whose words disagree) all fail the check.  Per-byte Python
was rejected for the obvious reason; everything here works on chunks of pages.
"""

from __future__ import annotations

import numpy as np

RAMP_STEP = np.uint64(0x9E3779B97F4A7C15)
_CHUNK_BYTES = 8 << 20


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
    words = arena.shape[1]
    ramp = _ramp(words)
    step = max(1, _CHUNK_BYTES // (8 * words))
    for lo in range(0, pfns.size, step):
        sl = slice(lo, lo + step)
        arena[pfns[sl]] = keys[sl, None] + ramp


def verify_pages(arena: np.ndarray, pfns: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices ``i`` whose page ``pfns[i]`` does not hold ``keys[i]``'s content."""
    words = arena.shape[1]
    ramp = _ramp(words)
    step = max(1, _CHUNK_BYTES // (8 * words))
    bad = []
    for lo in range(0, pfns.size, step):
        sl = slice(lo, lo + step)
        pages = arena[pfns[sl]]
        pages -= ramp
        wrong = (pages != keys[sl, None]).any(axis=1)
        if wrong.any():
            bad.append(np.flatnonzero(wrong) + lo)
    return np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
