"""What each traced call handed to migrate_pages(): its folios by order and
which of them failed.

``mm_migrate_pages`` counts base pages (``stats.nr_succeeded``,
``stats.nr_failed_pages``) and PMD-sized THPs (``nr_thp_succeeded``,
``nr_thp_failed``: mm/migrate.c counts a folio as THP when
``folio_test_pmd_mappable()``).  Without per-folio events the list is
rebuilt as THPs of order 9 and the remaining pages as order-0 folios (a
large folio below PMD size counts as its pages, so its order is lost); with
``remove_migration_pte`` events the call's folio orders are the events'
(one per folio, assuming each folio is mapped once).  A THP split on
-ENOMEM (``nr_thp_split``; ``migrate_pages_batch()`` counts it in
``nr_thp_failed`` too, and its parts' pages where they end, succeeded or
failed) is rebuilt as a THP whose destination allocation fails, so that it
is split and its parts tried; the other failed THPs and the remaining
failed pages become pinned folios (an extra reference: -EAGAIN on every
pass, as a GUP pin makes them fail in the kernel), THPs first, then the
smallest folios.

Calls with the same shape - reason, mode and (order, folios, pinned, split) -
replay identically on an idle emulated machine (the virtual clock is
deterministic), so a replay runs each shape once: 100,000 calls of a tiering
host fall into a few hundred shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._parse import HPAGE_PMD_ORDER, TraceCalls

#: What the rebuild assumes when a trace has no per-folio events.
ORDER_ASSUMPTION = ("no per-folio events (migrate:remove_migration_pte): THPs replayed as "
                    "order 9, the other pages as order-0 folios")

Shape = tuple  # (reason, mode index, ((order, nr_folios, nr_pinned, nr_split), ...))


@dataclass
class Shapes:
    """Distinct call shapes and, per traced call, the index of its shape."""

    shapes: list[Shape]
    index: np.ndarray  # per call
    max_folios: dict[int, int]  # per order, the most folios one call hands in

    def count(self) -> np.ndarray:
        return np.bincount(self.index, minlength=len(self.shapes))


def _folios(succeeded: int, failed: int, thp_ok: int, thp_failed: int, thp_split: int,
            orders: dict[int, int] | None) -> tuple[tuple[int, int, int, int], ...]:
    pages = succeeded + failed
    if orders:
        by_order = dict(orders)
    else:
        thps = thp_ok + thp_failed
        small = max(0, pages - (thps << HPAGE_PMD_ORDER))
        by_order = {o: n for o, n in ((HPAGE_PMD_ORDER, thps), (0, small)) if n}
    pinned: dict[int, int] = {}
    nthp = by_order.get(HPAGE_PMD_ORDER, 0)
    split = min(thp_split, nthp)
    left = failed
    if thp_failed > split and nthp:
        pinned[HPAGE_PMD_ORDER] = min(thp_failed - split, nthp - split)
        left -= pinned[HPAGE_PMD_ORDER] << HPAGE_PMD_ORDER
    for o in sorted(by_order):
        if left <= 0:
            break
        if o == HPAGE_PMD_ORDER:  # the split THPs' parts are not pinned whole
            break
        take = min(by_order[o] - pinned.get(o, 0), -(-left >> o))
        if take > 0:
            pinned[o] = pinned.get(o, 0) + take
            left -= take << o
    return tuple((o, by_order[o], pinned.get(o, 0), split if o == HPAGE_PMD_ORDER else 0)
                 for o in sorted(by_order, reverse=True))


def call_shapes(calls: TraceCalls) -> Shapes:
    cols = [calls[c].tolist() for c in ("reason", "mode", "succeeded", "failed",
                                         "thp_succeeded", "thp_failed", "thp_split")]
    seen: dict[Shape, int] = {}
    index = np.empty(len(calls), dtype=np.int64)
    max_folios: dict[int, int] = {}
    for i, (reason, mode, ok, bad, tok, tbad, tsplit) in enumerate(zip(*cols, strict=True)):
        shape = (reason, mode, _folios(ok, bad, tok, tbad, tsplit, calls.orders[i]))
        k = seen.get(shape)
        if k is None:
            k = seen[shape] = len(seen)
            for o, n, _, _ in shape[2]:
                max_folios[o] = max(max_folios.get(o, 0), n)
        index[i] = k
    return Shapes(list(seen), index, max_folios)
