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

import operator
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
    """Virtual clock: time passes only through the modelled costs.

    A modelled cost is a sleep, which MockClock ends by jumping the clock once
    every task is blocked: ~30 us of trio's run loop per sleep (a cancel
    scope, a deadline, an I/O poll, the autojump), as much as the rest of a
    closed-form batch phase.  When the sleeping task is alone - none
    runnable, none waiting for idle, no callback queued from a thread, no
    other deadline up to the sleep's end - that run loop could only jump the
    clock to the sleep's end, so the task jumps it itself
    (:meth:`sleep_until`) and goes on: the same times, in the same order.
    It still yields at least every ``JUMP_SLICE`` of wall time, so threads'
    callbacks (the FUSE tree's) and signals wait no longer than that.
    Rejected: one sleep for several phases (a waiter on a folio must wake at
    its remap), and a jump without the slice (a 1 GiB move would keep the
    loop for its whole wall time).
    """

    virtual = True
    name = "virtual"
    #: Longest (wall seconds) a task jumping the clock keeps the event loop.
    JUMP_SLICE = 0.005

    async def spend(self, seconds: float) -> None:
        if seconds <= 0:  # trio.sleep's: a checkpoint, or its ValueError
            await trio.sleep(seconds)
            return
        await self.sleep_until(trio.current_time() + seconds)

    async def sleep_until(self, deadline: float) -> None:
        """``trio.sleep_until(deadline)``; jumped to at once when nothing else
        could run before it (see the class)."""
        now = time.perf_counter()
        if now - self._last_yield < self.JUMP_SLICE:
            clock = _lone_mock_clock(deadline)
            if clock is not None:
                await trio.lowlevel.checkpoint_if_cancelled()  # as the sleep would raise
                # as MockClock._autojump() would, to the same float
                while clock.current_time() < deadline:
                    clock.jump(deadline - clock.current_time())
                return
        self._last_yield = now
        await trio.sleep_until(deadline)

    async def yield_point(self) -> None:
        """Nothing to do: every modelled cost already sleeps."""


#: A task's step still to run in the loop's current batch (a function), or None.
_NEXT_SEND = operator.attrgetter("_next_send_fn")


def _lone_mock_clock(deadline: float):
    """The run's MockClock if the run loop, were the current task to sleep
    until ``deadline``, would do nothing but autojump it there: autojump at
    0 and no rate, no other task runnable (queued, or still to run in the
    loop's current batch, which no statistic counts), no callback queued
    from a thread, no task in ``wait_all_tasks_blocked()``, no other
    deadline up to ``deadline``; else None.  Read from trio's runner as
    MockClock reads it; a trio without these attributes never jumps."""
    try:
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        clock = runner.clock
        if (getattr(clock, "autojump_threshold", None) != 0 or clock.rate != 0
                or runner.runq or runner.waiting_for_idle or runner.entry_queue.size()
                or not runner.deadlines.next_deadline() > deadline):
            return None
        if any(map(_NEXT_SEND, runner.tasks)):  # the current task's is None while it runs
            return None
    except AttributeError:
        return None
    return clock


def quiet_for(seconds: float) -> bool:
    """No task runnable and no sleep ending in the next ``seconds``:
    ``current_statistics()``'s ``tasks_runnable == 0`` and
    ``seconds_to_next_deadline >= seconds``, the same floats, read from trio's
    runner as :func:`_lone_mock_clock` reads it (``current_statistics()``
    builds the I/O manager's statistics too: ~5 us, twice a closed-form
    batch), and no task still to run in the loop's current batch (as
    :func:`_lone_mock_clock` asks); a trio without these attributes is asked
    the public way."""
    try:
        runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
        return (not runner.runq
                and runner.deadlines.next_deadline() - runner.current_time() >= seconds
                # nor one still to run in the loop's current batch, which no
                # statistic counts: else the answer would hang on trio's
                # (random) order within a batch
                and not any(map(_NEXT_SEND, runner.tasks)))
    except AttributeError:
        others = trio.lowlevel.current_statistics()
        return not others.tasks_runnable and others.seconds_to_next_deadline >= seconds


def mock_clock() -> trio.testing.MockClock:
    """The MockClock to pass to ``trio.run`` for a virtual-clock run."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)
