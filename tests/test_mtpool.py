"""mtcopy's copy threads: Zi Yan's pieces, claimed by whoever comes first."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migd.mm import _mtpool
from migd.mm._copy import folios_copy_mt, wake_helpers
from migd.mm._page import page_dtype

PAGES = 4096
WPP = 512  # real 4 KiB pages


def _arena():
    mem_map = np.zeros(2 * PAGES, dtype=page_dtype)
    arena = np.zeros((2 * PAGES, WPP), dtype=np.uint64)
    arena[:PAGES] = np.arange(PAGES * WPP, dtype=np.uint64).reshape(PAGES, WPP) + 1
    return mem_map, arena


def _folios(mem_map, orders):
    sizes = 1 << np.array(orders, dtype=np.int64)
    src = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    mem_map["order"][src] = orders
    return src, src + PAGES


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=st.lists(st.sampled_from([0, 2, 9]), min_size=1, max_size=6),
       threads=st.integers(1, 5), helpers=st.booleans())
def test_pieces_copy_every_byte_once_woken_or_not(orders, threads, helpers):
    """Fewer folios than threads (each folio cut T ways) and more (runs of
    folios): the copy is exact whether helpers are awake or not."""
    mem_map, arena = _arena()
    src, dst = _folios(mem_map, orders)
    if helpers:
        wake_helpers(threads)
    lo = 0 if len(orders) < 3 else 1  # a sub-range too
    folios_copy_mt(arena.ctypes.data, WPP * 8, mem_map, dst, src, lo, len(orders), threads)
    for i, o in enumerate(orders):
        s, d, n = int(src[i]), int(dst[i]), 1 << o
        want = arena[s:s + n] if i >= lo else np.zeros((n, WPP), dtype=np.uint64)
        assert np.array_equal(arena[d:d + n], want), (i, o)


def test_caller_never_waits_for_a_helper_that_did_not_start():
    """A helper counted awake but not running (descheduled): the caller claims
    every piece itself and returns, rather than waiting for it."""
    mem_map, arena = _arena()
    src, dst = _folios(mem_map, [9])
    ctl = _mtpool._CTL
    ctl[_mtpool.HELPERS] += 1  # "awake", but no such thread claims anything
    try:
        folios_copy_mt(arena.ctypes.data, WPP * 8, mem_map, dst, src, 0, 1, 2)
    finally:
        ctl[_mtpool.HELPERS] -= 1
    assert np.array_equal(arena[PAGES:PAGES + 512], arena[:512])
    claim = int(ctl[_mtpool.CLAIM])
    assert claim & 0xFFFFF == (claim >> 20) & 0xFFFFF == 2  # both pieces claimed
