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

import trio


class Clock:
    """Real clock: modelled costs are not charged; real work takes real time."""

    virtual = False
    name = "real"

    async def spend(self, seconds: float) -> None:
        """Account ``seconds`` of modelled CPU time (free here)."""

    async def yield_point(self) -> None:
        """Let other tasks (mutators, the tree) run between engine phases."""
        await trio.lowlevel.checkpoint()


class VirtualClock(Clock):
    """Virtual clock: time passes only through the modelled costs."""

    virtual = True
    name = "virtual"

    async def spend(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def yield_point(self) -> None:
        await trio.lowlevel.checkpoint()


def mock_clock() -> trio.testing.MockClock:
    """The MockClock to pass to ``trio.run`` for a virtual-clock run."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)
