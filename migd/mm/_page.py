"""Page and folio constants, and the per-folio flag bits migd keeps.

The kernel spreads folio state over ``page->flags``, ``_refcount``, ``_mapcount``
and the migration code's stash in ``dst->private``.  migd keeps one ``uint16``
of flags per head page; the bits are named after what they mirror.
"""

import numpy as np

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Largest folio order migd emulates: 9, a PMD-mapped THP (2 MiB).
MAX_FOLIO_ORDER = 9
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
#: ``migrate_pages()``' batch bound in base pages (mm/migrate.c), and the most
#: its knob (``nr_max_batched_migration``) takes: 1 GiB of base pages.
NR_MAX_BATCHED_MIGRATION = HPAGE_PMD_NR
NR_MAX_BATCHED_MIGRATION_LIMIT = 262144

# page->flags bits (those migration looks at).
PG_locked = 1 << 0
PG_mlocked = 1 << 1
#: Non-LRU "movable_ops" folio (zsmalloc, balloon): migrates through its own
#: callbacks, so it is never eligible for the batch copy.
PG_movable_ops = 1 << 2
# Migration state the kernel stashes per folio while it is unmapped.
FOLIO_WAS_MAPPED = 1 << 3
FOLIO_WAS_MLOCKED = 1 << 4
#: RFC v6: set by a migrator on each source folio it copied; consumed (test and
#: clear) by the move step, which copies on the CPU any folio not so marked.
FOLIO_CONTENT_COPIED = 1 << 5
#: On a migration list (``folio_isolate_lru()``): no other caller can take it.
PG_isolated = 1 << 6
#: Under writeback (``folio_test_writeback()``): only MIGRATE_SYNC waits for
#: it; the other modes fail the folio with -EBUSY.  Nothing in migd starts
#: writeback; a test or a caller sets it and ends it with ``wake_remapped()``.
PG_writeback = 1 << 7

#: ``struct page`` as migd keeps it: one 24-byte record per base page, the
#: array of them being ``mem_map``.  ``order`` is set on every page of a folio
#: (-1 on free pages) so any pfn finds its head; the other fields are meaningful
#: on the head page.  ``nid`` is fixed per pfn (``page_to_nid()``).  ``index`` is
#: the folio's global virtual page (``folio->index`` plus the tenant's base), so
#: the rmap walk needs nothing else.
page_dtype = np.dtype([
    ("flags", np.uint16),
    ("order", np.int8),
    ("nid", np.int8),
    ("mapcount", np.int16),
    ("_pad", np.int16),
    ("refcount", np.int32),
    ("mapping", np.int32),  # owning tenant (the anon_vma), -1 for none
    ("index", np.int64),
])

#: A page-table entry: the pfn mapped, and whether the entry is currently a
#: migration entry (then ``pfn`` names the source page, as the swap-format
#: entry made by ``make_migration_entry()`` does).
pte_dtype = np.dtype([("pfn", np.int64), ("migration_entry", np.bool_)], align=True)
