"""Automatic CPU/offload choice: decline the batches the CPU copies faster.

The RFC's reviewers asked that offload be never worse than the CPU ("at worst,
the performance should be the same as it is").  Whether it is depends on the
folio size, the batch size, the channels or threads, and the hardware; DTO
(Intel's DSA transparent offload) answers with a size threshold auto-adjusted
from measured copies.  Here the engine keeps, per migrator and cell (its
parameter, the batch's mean folio order, the batch size in powers of two), the
measured seconds per byte of the whole batch (unmap, copy, move) both ways:
offloaded, and declined (-EOPNOTSUPP, so the core copies on the CPU).  It takes the faster
one; it tries the other way once in :data:`EXPLORE_EVERY` decisions of a cell,
and at once when the way it takes changes speed by more than :data:`DRIFT`
(new hardware: what it knew of the other way is stale too).

Rejected: a fixed threshold per profile (the reviewers' point is that it must
hold on hardware nobody tabulated), and timing the two ways in a calibration
run at start (the mix of folio orders and batch sizes shifts during a run).
"""

from __future__ import annotations

from dataclasses import dataclass

#: One decision in this many per cell goes the other way, to notice change.
EXPLORE_EVERY = 256
#: A change of this fraction in the chosen way's speed re-measures the other.
DRIFT = 0.25
#: Weight of a new measurement in a cell's running estimate.
ALPHA = 0.3

Key = tuple[int, int, int]


@dataclass
class _Cell:
    offload: float | None = None  # seconds per byte, offloaded
    cpu: float | None = None  # seconds per byte, declined
    decisions: int = 0


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
        return best if cell.decisions % EXPLORE_EVERY else not best

    def observe(self, key: Key, offloaded: bool, seconds_per_byte: float) -> None:
        cell = self._cells[key]
        old = cell.offload if offloaded else cell.cpu
        if old is None or abs(seconds_per_byte - old) > DRIFT * old:
            new = seconds_per_byte
            if old is not None:  # the hardware changed under us
                if offloaded:
                    cell.cpu = None
                else:
                    cell.offload = None
        else:
            new = old + ALPHA * (seconds_per_byte - old)
        if offloaded:
            cell.offload = new
        else:
            cell.cpu = new

    def statistics(self) -> dict[Key, tuple[float | None, float | None]]:
        """Seconds per byte (offloaded, on the CPU) per cell."""
        return {k: (c.offload, c.cpu) for k, c in self._cells.items()}
