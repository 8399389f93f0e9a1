"""Page and folio constants, and the per-folio flag bits migd keeps.

The kernel spreads folio state over ``page->flags``, ``_refcount``, ``_mapcount``
and the migration code's stash in ``dst->private``.  migd keeps one ``uint16``
of flags per head page; the bits are named after what they mirror.
"""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
#: Largest folio order migd emulates: 9, a PMD-mapped THP (2 MiB).
MAX_FOLIO_ORDER = 9
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER

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
