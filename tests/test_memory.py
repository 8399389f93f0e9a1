"""The emulated machine: buddy allocator, folios, content, metadata budget."""

import ctypes
import errno

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migd.mm import (
    PAGE_SIZE,
    Machine,
    NodeSpec,
    PhysMemory,
    TenantSpec,
    madvise_populate_write,
    page_keys,
    verify_pages,
    write_pages,
)
from migd.mm._buddy import FreeArea

from .helpers import MiB


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 9), st.integers(1, 40),
                          st.booleans()), max_size=40))
def test_buddy_accounting_and_no_overlap(ops):
    """Random alloc/free on two nodes: blocks never overlap, stay aligned and on
    their node, and free + used = capacity; everything merges back at the end."""
    area = FreeArea([0, 4096], [4096, 2048])
    owned = np.zeros(4096 + 2048, dtype=bool)
    held: list[tuple[int, int, np.ndarray]] = []
    for nid, order, count, free_one in ops:
        if free_one and held:
            n, o, blocks = held.pop(0)
            area.free(n, o, blocks)
            for b in blocks.tolist():
                owned[b:b + (1 << o)] = False
            continue
        blocks = area.alloc(nid, order, count)
        assert blocks.size <= count
        assert not (blocks & ((1 << order) - 1)).any(), "naturally aligned"
        lo, hi = (0, 4096) if nid == 0 else (4096, 6144)
        assert ((blocks >= lo) & (blocks + (1 << order) <= hi)).all(), "on its node"
        for b in blocks.tolist():
            assert not owned[b:b + (1 << order)].any(), "overlapping allocation"
            owned[b:b + (1 << order)] = True
        held.append((nid, order, blocks))
        assert area.nr_free_pages(0) + area.nr_free_pages(1) + int(owned.sum()) == 6144
    for n, o, blocks in held:
        area.free(n, o, blocks)
    assert area.nr_free_pages(0) == 4096 and area.nr_free_pages(1) == 2048
    assert area.nr_free_blocks(0)[9] == 8 and area.nr_free_blocks(1)[9] == 4, "all merged back"


def test_buddy_refuses_double_free():
    area = FreeArea([0], [1024])
    b = area.alloc(0, 0, 2)
    area.free(0, 0, b[:1])
    with pytest.raises(ValueError, match="double free"):
        area.free(0, 0, b[:1])


def test_node_capacity_must_be_2mib_multiple():
    with pytest.raises(ValueError, match="multiple of 2 MiB"):
        Machine([NodeSpec(3 * MiB)])


def test_allocation_runs_out_cleanly():
    m = Machine([NodeSpec(4 * MiB)], words_per_page=1)
    got = m.memory.folio_alloc(0, 9, 5)
    assert got.size == 2
    assert m.memory.nodes[0].nr_free_pages == 0


def test_content_detects_torn_and_stale_pages():
    m = Machine([NodeSpec(4 * MiB)])
    t = m.add_tenant(TenantSpec("t", 1 * MiB))
    keys = page_keys(t.tid, np.arange(t.nr_pages), t.version)
    assert verify_pages(m.memory.arena, t.pte_pfn, keys).size == 0
    m.memory.arena[t.pte_pfn[3], 100] ^= 1  # one torn word
    stale = page_keys(t.tid, np.arange(t.nr_pages), t.version + 1)
    assert verify_pages(m.memory.arena, t.pte_pfn, keys).tolist() == [3]
    assert verify_pages(m.memory.arena, t.pte_pfn, stale).size == t.nr_pages
    assert not m.check_integrity().ok


def test_metadata_at_most_64_bytes_per_base_page():
    """struct-page arrays + buddy bitmaps + tenant page tables, measured, per base page."""
    m = Machine([NodeSpec(256 * MiB), NodeSpec(256 * MiB)], words_per_page=1)
    for i, order in enumerate((0, 4, 9)):
        m.add_tenant(TenantSpec(f"t{i}", 64 * MiB, order=order))
    total = m.memory.metadata_bytes() + sum(t.metadata_bytes() for t in m.tenants)
    per_page = total / m.memory.nr_pages
    assert per_page <= 64, per_page
    # and per mapped page the tenant side stays small too
    assert sum(t.metadata_bytes() for t in m.tenants) / sum(t.nr_pages for t in m.tenants) <= 16


def test_split_folio_keeps_content_and_rmap():
    m = Machine([NodeSpec(8 * MiB)])
    t = m.add_tenant(TenantSpec("t", 2 * MiB, order=9))
    head = int(t.pte_pfn[0])
    parts = m.memory.split_folio(head)
    assert parts.size == 512 and (m.memory.folio_order[parts] == 0).all()
    assert m.check_integrity().ok
    assert m.tenant_folios(t).size == 512
    assert PAGE_SIZE == 4096


def _resident(addr: int, nbytes: int) -> np.ndarray:
    """mincore(2): which pages of the page-aligned range are resident."""
    libc = ctypes.CDLL(None, use_errno=True)
    vec = np.zeros(nbytes // 4096, dtype=np.uint8)
    assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes),
                        ctypes.c_void_p(vec.ctypes.data)) == 0, ctypes.get_errno()
    return vec & 1 == 1


def test_an_arena_left_unbacked_is_backed_chunk_by_chunk_with_its_bytes_kept():
    """``populate=False`` leaves the arena to first touch (the daemon's start);
    ``madvise(MADV_POPULATE_WRITE)`` over ``arena_chunks()`` then backs every
    page without changing a byte of the pages already written, which is why it
    may run beside the engine's copies."""
    from migd.mm._memory import POPULATE_CHUNK
    m = PhysMemory([NodeSpec(64 * MiB, "a", None), NodeSpec(32 * MiB, "b", None)],
                   populate=False)
    assert not m.populated
    chunks = m.arena_chunks()
    start, end = chunks[0][0], chunks[-1][0] + chunks[-1][1]
    assert start % 4096 == 0 and start <= m.arena_base
    assert end >= m.arena_base + m.arena.nbytes and end % 4096 == 0
    assert all(a + n == b for (a, n), (b, _) in zip(chunks, chunks[1:], strict=False))
    assert max(n for _, n in chunks) <= POPULATE_CHUNK and len(chunks) > 1
    assert _resident(start, end - start).mean() < 0.5  # np.zeros maps lazily
    pfns = np.array([0, 7, 4096, m.nr_pages - 1])
    keys = page_keys(3, np.arange(pfns.size), np.ones(pfns.size, dtype=np.int64))
    write_pages(m.arena, pfns, keys)
    assert [madvise_populate_write(a, n) for a, n in chunks] == [0] * len(chunks)
    assert _resident(start, end - start).all()
    assert verify_pages(m.arena, pfns, keys).size == 0
    rest = np.setdiff1d(np.arange(m.nr_pages), pfns)
    assert not m.arena[rest].any()  # the others still read as zeros
    eager = PhysMemory([NodeSpec(64 * MiB, "a", None)])  # mapped apart from the heap
    assert eager.populated
    assert all(_resident(a, n).all() for a, n in eager.arena_chunks())


def test_backing_an_unmapped_range_names_the_errno():
    """madvise(2): a range with no mapping is ENOMEM; the daemon logs the errno
    (``arena_not_backed``) and leaves the pages to their first touch."""
    assert madvise_populate_write(4096, 4096) == errno.ENOMEM
