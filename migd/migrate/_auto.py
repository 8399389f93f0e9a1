"""Automatic CPU/offload choice: decline the batches the CPU copies faster.

The RFC's reviewers asked that offload be never worse than the CPU ("at worst,
the performance should be the same as it is").  Whether it is depends on the
folio size, the batch size, the channels or threads, and the hardware; DTO
(Intel's DSA transparent offload) answers with a size threshold auto-adjusted
from measured copies.  Here the engine keeps, per migrator and cell (its
parameter, the batch's mean folio order, the batch size in powers of two), the
measured seconds per byte of the whole batch (unmap, copy, move) both ways:
offloaded, and declined (-EOPNOTSUPP, so the core copies on the CPU), and takes
the faster.

Each estimate is a lower envelope: timing noise only ever adds time (a call's
first batches run with cold caches, in unmap and move whichever way copies; an
interrupt or a preempted copy thread slows any batch), so a faster batch is
believed at once and a slower one moves the estimate by :data:`RISE` of its
excess - a cold batch nudges it, a lasting slowdown carries it within a few
dozen batches.  The other way is tried at 2, 4, 8, .. decisions after the
choice last changed, then once in :data:`EXPLORE_EVERY`: the estimates made
first (in a call's cold start) or nudged into a new choice are checked soonest.
Rejected: reading a change over 25% as new hardware and re-measuring the other
way at once (the earlier design): one cold batch (39% on zen3-ptdma's 4K
folios) discarded a good estimate and set a cold time against a warm one until
the next exploration, 256 decisions on; requiring the change to persist over
a few batches fails too, as a cold start spans several small batches.
Rejected too: a cell per place in the call (like with like, but the place is
one more dimension to learn, each first batch learnt once per call), a fixed
threshold per profile (the reviewers' point is that it must hold on hardware
nobody tabulated), and timing the two ways in a calibration run at start (the
mix of folio orders and batch sizes shifts during a run).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Once settled, one decision in this many per cell goes the other way.
EXPLORE_EVERY = 256
#: Fraction of a slower batch's excess that a way's estimate takes on.
RISE = 1 / 16

Key = tuple[int, int, int]


@dataclass
class _Cell:
    offload: float | None = None  # seconds per byte, offloaded
    cpu: float | None = None  # seconds per byte, declined
    decisions: int = 0  # since the choice last changed
    best: bool | None = None  # the choice: offload?


class OffloadChooser:
    """Per-cell estimates of both copy ways, and the choice between them."""

    def __init__(self) -> None:
        self._cells: dict[Key, _Cell] = {}

    @staticmethod
    def key(param: int, nr_folios: int, nr_pages: int) -> Key:
        mean_order = (nr_pages // max(nr_folios, 1)).bit_length() - 1
        return param, mean_order, nr_pages.bit_length()

    def offload(self, key: Key) -> bool:
        """Whether to offload a batch of cell ``key``."""
        cell = self._cells.setdefault(key, _Cell())
        cell.decisions += 1
        if cell.offload is None:
            return True
        if cell.cpu is None:
            return False
        best = cell.offload <= cell.cpu
        if best != cell.best:  # a new choice: explore soon again (_explores)
            cell.best, cell.decisions = best, 1
        return not best if _explores(cell.decisions) else best

    def observe(self, key: Key, offloaded: bool, seconds_per_byte: float) -> None:
        cell = self._cells[key]
        old = cell.offload if offloaded else cell.cpu
        if old is None or seconds_per_byte < old:
            new = seconds_per_byte  # noise only ever adds time: a faster batch is the truth
        else:
            new = old + RISE * (seconds_per_byte - old)
        if offloaded:
            cell.offload = new
        else:
            cell.cpu = new

    def statistics(self) -> dict[Key, tuple[float | None, float | None]]:
        """Seconds per byte (offloaded, on the CPU) per cell."""
        return {k: (c.offload, c.cpu) for k, c in self._cells.items()}


def _explores(decision: int) -> bool:
    """Decision ``decision`` of a cell (counted from its last change of choice)
    tries the other way: at 2, 4, 8, .. then every EXPLORE_EVERY."""
    if decision >= EXPLORE_EVERY:
        return decision % EXPLORE_EVERY == 0
    return decision >= 2 and decision & (decision - 1) == 0
