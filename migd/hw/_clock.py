"""The two clocks the engine runs on.

The engine is one piece of code.  At each step that costs CPU time in the
kernel it calls ``await clock.spend(seconds)`` with the cost the hardware
profile predicts.  On the real clock that is free (the real work already cost
what it cost) and on the virtual clock it is a ``trio.sleep`` under
``trio.testing.MockClock(autojump_threshold=0)``, which jumps time forward as
soon as every task is blocked.  Timestamps come from ``trio.current_time()`` on
both, so measurements are taken the same way.

Rejected alternative: a separate analytic simulator for the virtual clock.  It
would drift from the engine; running the engine itself under a mock clock keeps
one set of semantics and lets the virtual run check integrity too.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Real clock: modelled costs are not charged; real work takes real time."""

    virtual = False
    name = "real"
    #: Longest the engine keeps the event loop between yields.
    YIELD_INTERVAL = 0.001

    def __init__(self) -> None:
        self._last_yield = 0.0

    async def spend(self, seconds: float) -> None:
        """Account ``seconds`` of modelled CPU time (free here)."""

    async def yield_point(self) -> None:
        """Let other tasks (mutators, the control tree) run, at most once per
        YIELD_INTERVAL: a trio checkpoint costs ~10 us, as much as the rest of
        a batch's bookkeeping, and nobody needs the loop more often."""
        now = time.perf_counter()
        if now - self._last_yield >= self.YIELD_INTERVAL:
            self._last_yield = now
            await trio.lowlevel.checkpoint()


class VirtualClock(Clock):
    """Virtual clock: time passes only through the modelled costs."""

    virtual = True
    name = "virtual"

    async def spend(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def yield_point(self) -> None:
        """Nothing to do: every modelled cost already sleeps."""


def mock_clock() -> trio.testing.MockClock:
    """The MockClock to pass to ``trio.run`` for a virtual-clock run."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)
