"""Fault injection with the kernel's ``struct fault_attr`` semantics (lib/fault-inject.c).

Each fault point has ``probability`` (percent), ``interval`` (fail only every
``interval``-th call that passes the other tests) and ``times`` (how many
failures remain; -1 for no limit), exactly the knobs of
``/sys/kernel/debug/fail_*``.  ``should_fail_many()`` decides a whole batch of
calls at once, in order, so that batch paths need no per-folio Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaultAttr:
    """One fault point (``DECLARE_FAULT_ATTR``)."""

    name: str
    probability: int = 0
    interval: int = 1
    times: int = 1
    count: int = 0  # calls seen (the kernel's ``count``, for interval)
    injected: int = 0
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(), repr=False)

    def seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def set(self, *, probability: int | None = None, interval: int | None = None,
            times: int | None = None) -> None:
        """Change knobs; ValueError (EINVAL) and nothing changed on a bad value."""
        if probability is not None and not 0 <= probability <= 100:
            raise ValueError("probability must be 0..100")
        if interval is not None and interval < 1:
            raise ValueError("interval must be >= 1")
        if times is not None and times < -1:
            raise ValueError("times must be -1 or >= 0")
        if probability is not None:
            self.probability = probability
        if interval is not None:
            self.interval = interval
        if times is not None:
            self.times = times

    def should_fail(self) -> bool:
        return bool(self.should_fail_many(1)[0])

    def should_fail_many(self, n: int) -> np.ndarray:
        """Decide ``n`` consecutive calls; returns a boolean mask of failures."""
        out = np.zeros(n, dtype=bool)
        if n == 0 or self.times == 0 or self.probability == 0:
            return out
        if self.interval > 1:
            calls = self.count + 1 + np.arange(n)
            cand = calls % self.interval == 0
        else:
            cand = np.ones(n, dtype=bool)
        if self.probability < 100:
            cand &= self._rng.random(n) * 100 < self.probability
        idx = np.flatnonzero(cand)
        counted = n
        if self.times > 0:
            idx = idx[: self.times]
            self.times -= idx.size
            if self.times == 0:  # should_fail_ex() stops counting once times is 0
                counted = int(idx[-1]) + 1
        self.count += counted
        out[idx] = True
        self.injected += idx.size
        return out


class FaultInjector:
    """The set of fault points, by their ``fail_*`` debugfs names."""

    POINTS = (
        "fail_migrate_alloc",  # destination folio allocation (-ENOMEM)
        "fail_dma_desc",  # descriptor completes with an error
        "fail_dma_timeout",  # descriptor never completes (-ETIMEDOUT)
        "fail_dma_partial",  # descriptor completes short
        "fail_dma_busy",  # no channel can be claimed (-EBUSY)
        "fail_iommu_merge",  # v6: src and dst map to unequal nents (-EINVAL); never unforced
    )
    #: Points whose failure only a driver that reports descriptor results
    #: makes visible (``DmaModel.reports_errors``); on PTDMA they corrupt.
    REPORTED = ("fail_dma_desc", "fail_dma_partial")

    @classmethod
    def points_for(cls, reports_errors: bool) -> tuple[str, ...]:
        """The points a soak may arm on an engine that does (not) report errors."""
        return cls.POINTS if reports_errors else tuple(
            p for p in cls.POINTS if p not in cls.REPORTED)

    def __init__(self, seed: int | None = None) -> None:
        self.points = {name: FaultAttr(name) for name in self.POINTS}
        if seed is not None:
            for i, attr in enumerate(self.points.values()):
                attr.seed(seed + i)

    def __getitem__(self, name: str) -> FaultAttr:
        return self.points[name]

    @property
    def armed(self) -> bool:
        """Whether any fault point can fire."""
        return any(a.probability and a.times for a in self.points.values())

    def injected(self) -> dict[str, int]:
        return {name: a.injected for name, a in self.points.items()}
