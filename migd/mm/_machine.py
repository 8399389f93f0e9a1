"""The emulated machine: physical memory, tenants, and the page table between them.

All tenants' page tables live in one machine-wide array of virtual pages (each
tenant owns a range starting at its ``vbase``), so a folio's ``index`` alone
leads the rmap walks (``_rmap``) to its PTEs.  Accesses by tenants go through
``access()``, which waits on migration entries the way a page fault on one
waits in ``migration_entry_wait()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trio

from . import _content
from ._memory import NodeSpec, PhysMemory
from ._page import PAGE_SIZE, PG_isolated, PG_locked, PG_mlocked, PG_movable_ops, pte_dtype
from ._tenant import Tenant, TenantSpec

#: A page's ``version`` after a fault mapped a cleared folio: its content is
#: zero, not its key's (the next write bumps it, wrapping to 0).
ZERO_VERSION = np.uint32(0xFFFFFFFF)


def _verify(arena: np.ndarray, tid: int, pfns: np.ndarray, vpages: np.ndarray,
            versions: np.ndarray) -> np.ndarray:
    """Indices whose page does not hold its expected content: its key's, or
    all zero words for a page faulted in cleared (``ZERO_VERSION``)."""
    zero = versions == ZERO_VERSION
    if not zero.any():
        return _content.verify_pages(arena, pfns, _content.page_keys(tid, vpages, versions))
    keyed = np.flatnonzero(~zero)
    bad = keyed[_content.verify_pages(arena, pfns[keyed],
                                      _content.page_keys(tid, vpages[keyed], versions[keyed]))]
    zi = np.flatnonzero(zero)
    nonzero = zi[arena[pfns[zi]].any(axis=1)]
    return np.sort(np.concatenate([bad, nonzero]))


@dataclass(frozen=True)
class IntegrityReport:
    """What ``Machine.check_integrity()`` found; all zero when nothing is wrong."""

    unmapped_vpages: int  # vpage maps no allocated page of its own folio
    shared_pfns: int  # a page mapped by more than one vpage
    misattributed_folios: int  # folio's rmap (mapping, index) disagrees with the PTE
    corrupt_pages: int  # content differs from (tenant, vpage, version)
    accounting_errors: int  # free + used != capacity on some node
    stale_migration_entries: int  # migration entry left behind with no migration running
    stale_isolated: int = 0  # folio left on a migration list with no migration running

    @property
    def ok(self) -> bool:
        return not any(vars(self).values())


class Machine:
    """Nodes + tenants.  Pure: no I/O, no logging; trio only for waiting."""

    def __init__(self, nodes: list[NodeSpec], words_per_page: int | None = None,
                 arena: np.ndarray | None = None, populate: bool = True) -> None:
        """``arena``: reuse another machine's page contents (same shape), which
        that machine must no longer use; ``populate``: back the arena now (see
        ``PhysMemory``)."""
        kw = {} if words_per_page is None else {"words_per_page": words_per_page}
        self.memory = PhysMemory(nodes, arena=arena, populate=populate, **kw)
        self.tenants: list[Tenant] = []
        # The page table: every mapped page is backed, so the machine's page
        # count bounds the virtual pages of all tenants together.
        n = self.memory.nr_pages
        self.ptes = np.zeros(n, dtype=pte_dtype)
        self.ptes["pfn"] = -1
        self.pte_pfn = self.ptes["pfn"]
        self.migration_entry = self.ptes["migration_entry"]
        self.version = np.zeros(n, dtype=np.uint32)
        #: The accessed bit of each virtual page (the PTE young bit): set by
        #: tenant accesses, cleared by aging; hot and cold tiering read it.
        self.accessed = np.zeros(n, dtype=bool)
        self._next_vpage = 0
        self._remapped = trio.Event()

    # -- tenants ----------------------------------------------------------------

    def add_tenant(self, spec: TenantSpec) -> Tenant:
        """Create a tenant and fault in all its memory on its home node."""
        mem = self.memory
        folio_bytes = PAGE_SIZE << spec.order
        if spec.size_bytes <= 0 or spec.size_bytes % folio_bytes:
            raise ValueError(
                f"tenant {spec.name!r}: size must be a positive multiple of its "
                f"folio size ({folio_bytes} bytes)"
            )
        if not 0 <= spec.home_node < len(mem.nodes):
            raise ValueError(f"tenant {spec.name!r}: home_node {spec.home_node} is no node")
        nr_pages = spec.size_bytes // PAGE_SIZE
        nr_folios = nr_pages >> spec.order
        heads = mem.folio_alloc(spec.home_node, spec.order, nr_folios)
        if heads.size < nr_folios:
            mem.folio_put(heads)
            raise MemoryError(f"tenant {spec.name!r}: node{spec.home_node} is too small")
        vbase = self._next_vpage
        self._next_vpage += nr_pages
        v = slice(vbase, vbase + nr_pages)
        tenant = Tenant(len(self.tenants), spec, vbase, self.pte_pfn[v],
                        self.migration_entry[v], self.version[v], self.accessed[v])
        vheads = vbase + (np.arange(nr_folios, dtype=np.int64) << spec.order)
        mem.mapping[heads] = tenant.tid
        mem.index[heads] = vheads
        mem.mapcount[heads] = 1
        mem.refcount[heads] += 1
        flags = (PG_mlocked if spec.mlocked else 0) | (PG_movable_ops if spec.movable_ops else 0)
        mem.flags[heads] |= flags
        tenant.pte_pfn[:] = mem.folio_pages(heads, np.full(nr_folios, spec.order))
        vpages = np.arange(nr_pages, dtype=np.int64)
        _content.write_pages(mem.arena, tenant.pte_pfn,
                             _content.page_keys(tenant.tid, vpages, tenant.version))
        self.tenants.append(tenant)
        return tenant

    def tenant_folios(self, tenant: Tenant, vpages: np.ndarray | None = None) -> np.ndarray:
        """Head pfns of the folios backing ``vpages`` (all, by default), deduplicated."""
        pfns = tenant.pte_pfn if vpages is None else tenant.pte_pfn[vpages]
        return np.unique(self.memory.page_folio(pfns))

    def wake_remapped(self) -> None:
        """Wake tasks waiting on migration entries (``migration_entry_wait()``)
        or on a folio lock: the kernel's folio wait queues serve both."""
        self._remapped.set()
        self._remapped = trio.Event()

    def nr_folio_waiters(self) -> int:
        """Tasks asleep in :meth:`folio_wait` or on a migration entry."""
        return self._remapped.statistics().tasks_waiting

    async def folio_wait(self) -> None:
        """Sleep until the next :meth:`wake_remapped` (``folio_wait_bit()``)."""
        await self._remapped.wait()

    # -- faults ----------------------------------------------------------------------

    def replaceable(self, tenant: Tenant, vhead: int) -> int:
        """The head pfn of the folio mapping ``vhead``, when the region may be
        freed and faulted again now (mapped, not under migration, locked or
        isolated, whole: a folio of the tenant's order, and no reference but
        its own and its mapping's: a pinned folio outlives its munmap() in the kernel, so
        migd leaves such a region alone), else -1."""
        mem = self.memory
        order = tenant.spec.order
        v = slice(vhead, vhead + (1 << order))
        if tenant.migration_entry[v].any():
            return -1
        pfn = int(tenant.pte_pfn[vhead])
        if pfn < 0 or int(mem.folio_order[pfn]) != order:
            return -1
        if mem.flags[pfn] & (PG_locked | PG_isolated) or mem.mapcount[pfn] != 1:
            return -1
        if mem.refcount[pfn] != 1 + mem.mapcount[pfn]:  # pinned (pin_user_pages) or held
            return -1
        return pfn

    def map_cleared(self, tenant: Tenant, vhead: int, old: int, new: int) -> None:
        """``munmap()`` of the region's folio ``old`` and the fault that maps
        the cleared folio ``new`` (``do_anonymous_page()`` /
        ``do_huge_pmd_anonymous_page()``: ``folio_add_new_anon_rmap()``); the
        pages' content is now zero (``ZERO_VERSION``).  No await: the swap is
        atomic to every other task."""
        mem = self.memory
        order = tenant.spec.order
        n = 1 << order
        mem.mapping[new] = tenant.tid
        mem.index[new] = tenant.vbase + vhead
        mem.mapcount[new] = 1
        mem.refcount[new] += 1
        mem.flags[new] |= mem.flags[old] & (PG_mlocked | PG_movable_ops)
        tenant.pte_pfn[vhead:vhead + n] = new + np.arange(n)
        tenant.version[vhead:vhead + n] = ZERO_VERSION
        tenant.accessed[vhead:vhead + n] = False
        mem.mapcount[old] = 0
        mem.refcount[old] = 0  # its own and its mapping's, the only ones (replaceable())
        mem.folio_put(np.array([old], dtype=np.int64))

    # -- tenant accesses ------------------------------------------------------------

    async def access(self, tenant: Tenant, vpages: np.ndarray, write: np.ndarray) -> int:
        """Touch ``vpages`` (reads verify content, writes change it).

        Pages under a migration entry are waited for first, as a fault on a
        migration entry waits for the folio to be remapped; the wait is the
        tenant's stall.  Returns the number of corrupt reads found.
        """
        c = tenant._counters
        blocked = tenant.migration_entry[vpages]
        if blocked.any():
            start = trio.current_time()
            while tenant.migration_entry[vpages].any():
                await self._remapped.wait()
            stall = trio.current_time() - start
            c.stalls += int(blocked.sum())
            c.stall_seconds += stall
            c.max_stall_seconds = max(c.max_stall_seconds, stall)
        mem = self.memory
        tenant.accessed[vpages] = True
        reads, writes = vpages[~write], vpages[write]
        bad = _verify(mem.arena, tenant.tid, tenant.pte_pfn[reads], reads,
                      tenant.version[reads])
        if bad.size:
            c.corrupt_reads += int(bad.size)
            c.corrupt_vpages.extend(int(v) for v in reads[bad][:64])
        tenant.version[writes] += 1
        _content.write_pages(mem.arena, tenant.pte_pfn[writes],
                             _content.page_keys(tenant.tid, writes, tenant.version[writes]))
        c.reads += int(reads.size)
        c.writes += int(writes.size)
        return int(bad.size)

    async def run_mutator(self, tenant: Tenant, seed: int = 0, tick: float = 0.01) -> None:
        """The tenant's mutator: ``access_rate`` random touches per second, forever."""
        rate = tenant.spec.access_rate
        if rate <= 0:
            return
        rng = np.random.default_rng(seed)
        per_tick = rate * tick
        carry = 0.0
        while True:
            await trio.sleep(tick)
            carry += per_tick
            n = int(carry)
            carry -= n
            if n:
                vpages = rng.integers(0, tenant.nr_pages, n)
                await self.access(tenant, vpages, rng.random(n) < tenant.spec.write_fraction)

    # -- invariants -----------------------------------------------------------------

    def check_integrity(self, migrating: bool = False) -> IntegrityReport:
        """Check every invariant migd promises, over the whole machine.

        Every vpage maps exactly one page of an allocated folio whose rmap
        names it; no page is mapped twice; every page verifies; each node's
        free + used pages equal its capacity.  With ``migrating`` False, no
        migration entry may remain.
        """
        mem = self.memory
        unmapped = shared = misattributed = corrupt = stale = 0
        all_pfns = []
        for t in self.tenants:
            pfns = t.pte_pfn
            valid = (pfns >= 0) & (pfns < mem.nr_pages)
            valid[valid] &= mem.folio_order[pfns[valid]] >= 0
            unmapped += int((~valid).sum())
            ok_pfns, ok_v = pfns[valid], np.flatnonzero(valid)
            heads = mem.page_folio(ok_pfns)
            expect_index = mem.index[heads].astype(np.int64) + (ok_pfns - heads) - t.vbase
            misattributed += int(((mem.mapping[heads] != t.tid) | (expect_index != ok_v)).sum())
            bad = _verify(mem.arena, t.tid, ok_pfns, ok_v, t.version[ok_v])
            corrupt += int(bad.size)
            if not migrating:
                stale += int(t.migration_entry.sum())
            all_pfns.append(ok_pfns)
        if all_pfns:
            cat = np.concatenate(all_pfns)
            shared = int(cat.size - np.unique(cat).size)
        stale_isolated = 0
        if not migrating:
            heads = np.flatnonzero(mem.folio_order >= 0)
            stale_isolated = int(((mem.flags[heads] & PG_isolated) != 0).sum())
        accounting = 0
        for node in mem.nodes:
            used = int((mem.folio_order[node.start_pfn:node.end_pfn] >= 0).sum())
            accounting += int(used + node.nr_free_pages != node.nr_pages)
        return IntegrityReport(unmapped, shared, misattributed, corrupt, accounting, stale,
                               stale_isolated)
