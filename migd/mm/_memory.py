"""Physical memory: nodes, the struct-page arrays, and real byte arenas.

Every base page has a page frame number (pfn) in one global space; node ``n``
owns the contiguous range ``[node.start_pfn, node.end_pfn)``, and node starts are
aligned to the largest folio so that "naturally aligned in its node" and
"naturally aligned pfn" are the same thing.

Folio state lives in parallel numpy arrays indexed by pfn (the moral equivalent
of the ``struct page`` array, ``mem_map``), meaningful at the folio's head page
except ``folio_order``, which every page of a folio carries so that any pfn finds
its head (``page_folio()``) in O(1).  One Python object per folio was rejected:
at millions of folios it breaks the 64-bytes-per-base-page budget and makes
every batch operation a Python loop.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import dataclass

import numpy as np

from . import _copy, _rmap
from ._buddy import FreeArea
from ._page import HPAGE_PMD_NR, MAX_FOLIO_ORDER, PAGE_SIZE, page_dtype

#: Words per page in the arena when bytes really move (a 4 KiB page).
WORDS_PER_PAGE_REAL = PAGE_SIZE // 8

#: ``MAX_NUMNODES`` (``1 << CONFIG_NODES_SHIFT``) of an x86-64 kernel built
#: with the default NODES_SHIFT, 6 (MAXSMP raises it to 10).  ``struct page``'s
#: ``nid`` here is an int8, so 128 would be this emulation's own limit; the
#: kernel's default is the smaller and the one node indices are checked against.
MAX_NUMNODES = 64

#: madvise(2) advice (Linux 5.14) that backs a range with writable pages
#: without writing them: the bytes stay what they were, so it may run while
#: the engine copies into the same pages.
MADV_POPULATE_WRITE = 23
#: Bytes of the arena one :func:`madvise_populate_write` call backs: the call
#: holds mmap_lock, which every mmap/munmap of the process waits for (64 MiB
#: held it ~190 ms on a cold host; 4 MiB ~11 ms).
POPULATE_CHUNK = 4 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def madvise_populate_write(addr: int, length: int) -> int:
    """``madvise(addr, length, MADV_POPULATE_WRITE)``, without the GIL (a
    ctypes call): 0, or the errno (EINVAL before Linux 5.14, ENOMEM where the
    range is not mapped).  On a virtual machine whose host took back idle
    guest memory, backing 1 GiB costs ~3 s of host faults wherever it happens."""
    if _libc.madvise(addr, length, MADV_POPULATE_WRITE) == 0:
        return 0
    return ctypes.get_errno()


def host_memory() -> int:
    """This machine's memory in bytes: ``MemTotal`` of /proc/meminfo (sysinfo's
    totalram, which is what ``_SC_PHYS_PAGES`` reads)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_limit(mem_total: int | None = None) -> int:
    """The most emulated memory (nodes' capacities together) migd builds on a
    machine of ``mem_total`` bytes (default: this one's): half of it.  The
    other half is for the per-page metadata (~1.1% of the capacity), Python
    and numba, and whatever else the host runs; refusing up front beats
    np.zeros overcommitting and the OOM killer ending the process mid-fill."""
    return (host_memory() if mem_total is None else mem_total) // 2


@dataclass(frozen=True)
class NodeSpec:
    """Configuration of one memory node."""

    capacity_bytes: int
    name: str = "dram"
    #: Node folios are demoted to, or None for the lowest tier.
    demotion_target: int | None = None


class Node:
    """One NUMA node: a pfn range of the machine's free area."""

    def __init__(self, nid: int, spec: NodeSpec, start_pfn: int) -> None:
        nr_pages = spec.capacity_bytes // PAGE_SIZE
        if spec.capacity_bytes % (HPAGE_PMD_NR * PAGE_SIZE) or nr_pages == 0:
            raise ValueError(
                f"node{nid}: capacity must be a positive multiple of 2 MiB, "
                f"got {spec.capacity_bytes} bytes"
            )
        self.nid = nid
        self.name = spec.name
        self.demotion_target = spec.demotion_target
        self.start_pfn = start_pfn
        self.nr_pages = nr_pages
        self.free_area: FreeArea | None = None

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.nr_pages

    @property
    def nr_free_pages(self) -> int:
        return self.free_area.nr_free_pages(self.nid)


class PhysMemory:
    """All nodes, the struct-page arrays and the arena holding page contents.

    ``words_per_page`` is 512 when bytes really move (4 KiB pages).  On the
    virtual clock it may be 1: each page then carries one 64-bit word of
    content, enough for every integrity check, and a 1 GiB experiment needs
    2 MiB of RAM instead of 1 GiB.
    """

    def __init__(self, nodes: list[NodeSpec], words_per_page: int = WORDS_PER_PAGE_REAL,
                 arena: np.ndarray | None = None, populate: bool = True) -> None:
        if not 0 < len(nodes) <= MAX_NUMNODES:
            raise ValueError(f"1..{MAX_NUMNODES} nodes are needed (MAX_NUMNODES), "
                             f"got {len(nodes)}")
        self.nodes: list[Node] = []
        start = 0
        for nid, spec in enumerate(nodes):
            if spec.demotion_target is not None and not 0 <= spec.demotion_target < len(nodes):
                raise ValueError(f"node{nid}: demotion_target {spec.demotion_target} is no node")
            node = Node(nid, spec, start)
            self.nodes.append(node)
            start = node.end_pfn
        self.nr_pages = start
        self.free_area = FreeArea([nd.start_pfn for nd in self.nodes],
                                  [nd.nr_pages for nd in self.nodes])
        for nd in self.nodes:
            nd.free_area = self.free_area
        self.words_per_page = words_per_page
        n = self.nr_pages
        # struct page (see _page.page_dtype); the per-field names are numpy
        # views of mem_map, for vectorised code.
        self.mem_map = np.zeros(n, dtype=page_dtype)
        self.mem_map["order"] = -1
        self.mem_map["mapping"] = -1
        for nd in self.nodes:
            self.mem_map["nid"][nd.start_pfn:nd.end_pfn] = nd.nid
        self.folio_order = self.mem_map["order"]
        self.flags = self.mem_map["flags"]
        self.refcount = self.mem_map["refcount"]
        self.mapcount = self.mem_map["mapcount"]
        self.mapping = self.mem_map["mapping"]
        self.index = self.mem_map["index"]
        self.nid_of = self.mem_map["nid"]
        # Page contents.  np.zeros maps lazily; every page is backed now so
        # that first-touch page faults never land inside a timed copy, unless
        # ``populate`` is False: the daemon backs them after it is ready
        # (``arena_chunks``), for a start that does not wait seconds on a host
        # that took its idle memory back.  A given arena (another machine's,
        # of the same shape) is taken as it is: its pages are backed already,
        # and every page a tenant maps is written when the tenant faults it
        # in, so stale bytes are never read.
        given = arena is not None
        if arena is None:
            arena = np.zeros((n, words_per_page), dtype=np.uint64)
        elif arena.shape != (n, words_per_page) or arena.dtype != np.uint64:
            raise ValueError(f"arena of shape {arena.shape} {arena.dtype}, "
                             f"this memory needs ({n}, {words_per_page}) uint64")
        self.arena = arena
        #: Address of the arena, for compiled copies (the arena never moves).
        self.arena_base = self.arena.ctypes.data
        #: Whether every page of the arena is backed.
        self.populated = given
        if populate and not given:
            if any(madvise_populate_write(a, nbytes) for a, nbytes in self.arena_chunks()):
                arena.fill(0)  # no other writer yet: writing zeros is safe here
            self.populated = True

    def arena_chunks(self) -> list[tuple[int, int]]:
        """The arena as (address, bytes) ranges of :data:`POPULATE_CHUNK`,
        page-aligned: the first starts at the page holding the arena's first
        byte (numpy maps a large array a few bytes past a page boundary; a
        smaller one shares its pages with the heap, where backing a page
        changes no byte either)."""
        page = mmap.PAGESIZE
        start = self.arena_base & ~(page - 1)
        end = -(-(self.arena_base + self.arena.nbytes) // page) * page
        return [(a, min(POPULATE_CHUNK, end - a)) for a in range(start, end, POPULATE_CHUNK)]

    # -- folio lookup -------------------------------------------------------

    def folio_nr_pages(self, heads: np.ndarray) -> np.ndarray:
        return np.left_shift(1, self.folio_order[heads].astype(np.int64))

    def page_folio(self, pfns: np.ndarray) -> np.ndarray:
        """Head pfn of the folio containing each pfn (``page_folio()``)."""
        order = self.folio_order[pfns].astype(np.int64)
        if (order < 0).any():
            raise ValueError("page_folio() of a free page")
        return pfns & ~((np.int64(1) << order) - 1)

    def folio_pages(self, heads: np.ndarray, orders: np.ndarray | None = None) -> np.ndarray:
        """All pfns of the given folios, folio after folio."""
        heads = np.asarray(heads, dtype=np.int64)
        if orders is None:
            orders = self.folio_order[heads]
        sizes = np.left_shift(1, orders.astype(np.int64))
        if heads.size and (sizes == sizes[0]).all():
            return (heads[:, None] + np.arange(sizes[0])).ravel()
        starts = np.repeat(heads - np.cumsum(sizes) + sizes, sizes)
        return starts + np.arange(int(sizes.sum()))

    # -- allocation (folio_alloc / folio_put) ---------------------------------

    def folio_alloc(self, nid: int, order: int, count: int) -> np.ndarray:
        """Allocate up to ``count`` folios of ``order`` on node ``nid``.

        Returns the head pfns (possibly fewer than asked: the node is full).
        New folios hold one reference, as ``folio_alloc()`` returns them.
        """
        if not 0 <= order <= MAX_FOLIO_ORDER:
            raise ValueError(f"folio order {order} is outside 0..{MAX_FOLIO_ORDER}")
        out = np.empty(count, dtype=np.int64)
        n = _rmap.folio_alloc_batch(self.free_area.bitmap, self.free_area.area, self.mem_map,
                                    nid, order, count, out)
        return out[:n]

    def folio_put(self, heads: np.ndarray) -> None:
        """Drop the last reference: return the folios to their node's buddy."""
        heads = np.asarray(heads, dtype=np.int64)
        if heads.size:
            _rmap.folio_put_batch(self.free_area.bitmap, self.free_area.area, self.mem_map,
                                  heads)

    def split_folio(self, head: int) -> np.ndarray:
        """Split a large folio into order-0 folios in place (``split_folio()``).

        Each new folio inherits the head's flags, mapping and reference (one
        per page, as ``__split_huge_page`` hands them out) and its index.
        """
        order = int(self.folio_order[head])
        if order <= 0:
            raise ValueError("split_folio() of a folio that is not large")
        pages = head + np.arange(1 << order)
        self.folio_order[pages] = 0
        self.flags[pages] = self.flags[head]
        self.refcount[pages] = self.refcount[head]
        self.mapcount[pages] = self.mapcount[head]
        self.mapping[pages] = self.mapping[head]
        self.index[pages] = self.index[head] + np.arange(1 << order)
        return pages

    # -- contents -------------------------------------------------------------

    @property
    def page_bytes(self) -> int:
        """Bytes of content per page in the arena (4096, or 8 on the virtual clock)."""
        return self.words_per_page * 8

    def copy_folios(self, dst: np.ndarray, src: np.ndarray, orders: np.ndarray) -> None:
        """``folio_mc_copy()`` for many folios: real bytes, one memcpy per folio."""
        _copy.copy_folios(self.arena_base, self.page_bytes,
                          np.ascontiguousarray(dst, dtype=np.int64),
                          np.ascontiguousarray(src, dtype=np.int64),
                          np.ascontiguousarray(orders, dtype=np.int8))

    def metadata_bytes(self) -> int:
        """Bytes of per-page metadata: struct-page arrays and buddy bitmaps."""
        return self.mem_map.nbytes + self.free_area.metadata_bytes()
