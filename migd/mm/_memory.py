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

from dataclasses import dataclass

import numpy as np

from ._buddy import BuddyAllocator
from ._page import HPAGE_PMD_NR, MAX_FOLIO_ORDER, PAGE_SIZE

#: Words per page in the arena when bytes really move (a 4 KiB page).
WORDS_PER_PAGE_REAL = PAGE_SIZE // 8
_SLICE_COPY_ORDER = 6


@dataclass(frozen=True)
class NodeSpec:
    """Configuration of one memory node."""

    capacity_bytes: int
    name: str = "dram"
    #: Node folios are demoted to, or None for the lowest tier.
    demotion_target: int | None = None


class Node:
    """One NUMA node: a pfn range and its buddy allocator."""

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
        self.buddy = BuddyAllocator(nr_pages)

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.nr_pages

    @property
    def nr_free_pages(self) -> int:
        return self.buddy.nr_free_pages


class PhysMemory:
    """All nodes, the struct-page arrays and the arena holding page contents.

    ``words_per_page`` is 512 when bytes really move (4 KiB pages).  On the
    virtual clock it may be 1: each page then carries one 64-bit word of
    content, enough for every integrity check, and a 1 GiB experiment needs
    2 MiB of RAM instead of 1 GiB.
    """

    def __init__(self, nodes: list[NodeSpec], words_per_page: int = WORDS_PER_PAGE_REAL) -> None:
        if not nodes:
            raise ValueError("at least one node is needed")
        self.nodes: list[Node] = []
        start = 0
        for nid, spec in enumerate(nodes):
            if spec.demotion_target is not None and not 0 <= spec.demotion_target < len(nodes):
                raise ValueError(f"node{nid}: demotion_target {spec.demotion_target} is no node")
            node = Node(nid, spec, start)
            self.nodes.append(node)
            start = node.end_pfn
        self.nr_pages = start
        self.words_per_page = words_per_page
        n = self.nr_pages
        # struct page, split into arrays (see module docstring).
        self.folio_order = np.full(n, -1, dtype=np.int8)  # -1: free page
        self.flags = np.zeros(n, dtype=np.uint16)
        self.refcount = np.zeros(n, dtype=np.int32)
        self.mapcount = np.zeros(n, dtype=np.int16)
        self.mapping = np.full(n, -1, dtype=np.int32)  # owning tenant (anon_vma)
        self.index = np.zeros(n, dtype=np.int32)  # vpage of the head page
        self.nid_of = np.concatenate(
            [np.full(nd.nr_pages, nd.nid, dtype=np.int8) for nd in self.nodes]
        )
        # Page contents.  np.zeros maps lazily; touch every page now so that
        # first-touch page faults never land inside a timed copy.
        self.arena = np.zeros((n, words_per_page), dtype=np.uint64)
        self.arena.fill(0)
        self._views: dict[int, np.ndarray] = {}

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
        node = self.nodes[nid]
        heads = node.buddy.alloc(order, count) + node.start_pfn
        self.folio_order[self.folio_pages(heads, np.full(heads.size, order))] = order
        self.flags[heads] = 0
        self.refcount[heads] = 1
        self.mapcount[heads] = 0
        self.mapping[heads] = -1
        self.index[heads] = 0
        return heads

    def folio_put(self, heads: np.ndarray) -> None:
        """Drop the last reference: return the folios to their node's buddy."""
        heads = np.asarray(heads, dtype=np.int64)
        if heads.size == 0:
            return
        orders = self.folio_order[heads]
        if (orders < 0).any():
            raise ValueError("folio_put() of a page that is not allocated")
        self.folio_order[self.folio_pages(heads, orders)] = -1
        self.refcount[heads] = 0
        self.mapping[heads] = -1
        nids = self.nid_of[heads]
        if nids.min() == nids.max() and orders.min() == orders.max():
            node = self.nodes[nids[0]]
            node.buddy.free(int(orders[0]), heads - node.start_pfn)
            return
        for nid in np.unique(nids):
            node = self.nodes[nid]
            for order in np.unique(orders[nids == nid]):
                sel = heads[(nids == nid) & (orders == order)]
                node.buddy.free(int(order), sel - node.start_pfn)

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

    def folio_view(self, order: int) -> np.ndarray:
        """The arena as a 1-d array with one opaque element per order-``order`` block.

        ``view[dst >> order] = view[src >> order]`` copies whole folios, one
        memcpy each, without per-word work in numpy.
        """
        view = self._views.get(order)
        if view is None:
            rows = self.arena.reshape(self.nr_pages >> order, self.words_per_page << order)
            view = rows.view(np.dtype((np.void, rows.shape[1] * 8))).reshape(-1)
            self._views[order] = view
        return view

    def copy_folios(self, dst: np.ndarray, src: np.ndarray, orders: np.ndarray) -> None:
        """``folio_mc_copy()`` for many folios: real bytes, one folio at a time.

        Small folios go through :meth:`folio_view` (one memcpy per folio, in C);
        folios of 256 KiB and more are copied slice by slice, which avoids the
        temporary buffer numpy's fancy indexing would make.
        """
        if src.size == 0:
            return
        uniform = bool((orders == orders[0]).all())
        groups = [(int(orders[0]), slice(None))] if uniform else [
            (int(o), orders == o) for o in np.unique(orders)]
        arena = self.arena
        for order, sel in groups:
            d, s = dst[sel], src[sel]
            if order >= _SLICE_COPY_ORDER:
                n = 1 << order
                for di, si in zip(d.tolist(), s.tolist(), strict=True):
                    arena[di:di + n] = arena[si:si + n]
            else:
                view = self.folio_view(order)
                view[d >> order] = view[s >> order]

    def metadata_bytes(self) -> int:
        """Bytes of per-page metadata: struct-page arrays and buddy bitmaps."""
        arrays = (self.folio_order, self.flags, self.refcount, self.mapcount, self.mapping,
                  self.index, self.nid_of)
        return sum(a.nbytes for a in arrays) + sum(nd.buddy.metadata_bytes() for nd in self.nodes)
