"""Batch sizing under a latency budget (``max_inaccessible_us``).

The batch bound trades throughput (large batches amortise the per-batch flush
and DMA set-up, and give every channel work) against the time a folio stays
unmapped: every folio of a batch is unmapped before the first is copied, so
the batch's longest per-folio inaccessible time is about the batch's duration,
and the first-folio latency is part of it.  With a budget ``B`` the engine asks
:class:`BatchBudget` for each batch's bound; after each batch the measured
longest inaccessible time ``T`` of a batch of ``n`` pages moves the bound to
``n * target / T`` (``target`` a little under ``B``), at most doubling per
batch, and by at least one folio while under the target, but never back to a
size that went over the budget in the last :data:`CEILING_BATCHES` batches.

Why a measured, proportional rule: a batch's duration is close to
``a + b * n`` for a CPU copy, but flat and then linear for DMA (channels idle
until the batch fills them), and both change with the hardware and the mix of
folio orders.  A model fitted to one of those (or a table per profile, the
rejected alternative) is wrong for the others; the proportional step needs no
model, never overshoots a linear ``a + b * n`` from below, and corrects an
overshoot in one batch.  Short batches (the end of a caller's list) carry no
news about the bound unless they exceeded the budget, and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Aim this far under the budget: the margin for batch-to-batch jitter.
TARGET_FRACTION = 0.85
#: A batch of fewer pages than this fraction of its bound says nothing new.
FULL_BATCH_FRACTION = 0.5
#: A batch size that went over the budget is not tried again for this many
#: batches (then it is, once: the hardware or the folio mix may have changed).
CEILING_BATCHES = 256


@dataclass(frozen=True)
class BudgetStatistics:
    budget_us: int
    bounds: dict[str, int]  # current bound (pages) per migrator
    batches: int  # batches observed under the budget
    exceeded: int  # of which the longest inaccessible time was over the budget


class BatchBudget:
    """Per-migrator batch bounds that keep each folio's inaccessible time under
    a budget, adapted online from measured batches."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.budget_us = 0
        self._bounds: dict[str, int] = {}
        #: Per migrator: the smallest batch (pages) over the budget lately, and
        #: batches since it was set.
        self._ceilings: dict[str, tuple[int, int]] = {}
        self.batches = 0
        self.exceeded = 0

    def set_budget(self, budget_us: int) -> None:
        self.budget_us = budget_us

    def bound(self, migrator: str, initial: int) -> int:
        return self._bounds.setdefault(migrator, initial)

    def observe(self, migrator: str, nr_folios: np.ndarray, nr_pages: np.ndarray,
                longest: np.ndarray) -> None:
        """Batches of ``migrator`` done: their size and longest inaccessible seconds."""
        if not self.budget_us or migrator not in self._bounds:
            return
        budget = self.budget_us * 1e-6
        target = budget * TARGET_FRACTION
        bound = self._bounds[migrator]
        for folios, pages, t in zip(nr_folios.tolist(), nr_pages.tolist(), longest.tolist(),
                                    strict=True):
            self.batches += 1
            over = t > budget
            self.exceeded += over
            if t <= 0 or (pages < FULL_BATCH_FRACTION * bound and not over):
                continue
            ceiling, age = self._ceilings.get(migrator, (self.limit + 1, 0))
            if over:
                ceiling, age = min(ceiling, pages), 0
            elif age >= CEILING_BATCHES:
                ceiling, age = self.limit + 1, 0  # the hardware may have changed
            self._ceilings[migrator] = (ceiling, age + 1)
            want = pages * target / t
            if t < target:
                # At least one folio more: where a batch's time hardly grows
                # with its size (idle DMA channels) the proportional step alone
                # would stop short of the next folio ...
                want = max(want, pages + pages / folios)
            # ... but not back to a size that went over the budget lately.
            bound = int(min(max(want, 1), 2 * bound, ceiling - 1, self.limit))
        self._bounds[migrator] = bound

    def statistics(self) -> BudgetStatistics:
        return BudgetStatistics(self.budget_us, dict(self._bounds), self.batches,
                                self.exceeded)
