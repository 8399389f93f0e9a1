"""The fault injector as a plain object, against lib/fault-inject.c ``should_fail_ex()``.

The kernel's order: probability 0 -> no; times 0 -> no (and the call is not
counted); interval > 1 -> ``count++``, fail only when ``count % interval == 0``;
then ``probability <= get_random_u32_below(100)`` -> no; on a failure ``times``
drops by one unless it is -1.  The reference below is that code, call by call.
"""

import random

import pytest

from migd.faults import FaultAttr, FaultInjector


class KernelFaultAttr:
    """``struct fault_attr`` and ``should_fail_ex()``, transcribed (no task filter,
    space, stacktrace or fail_nth: migd has none)."""

    def __init__(self, probability: int, interval: int, times: int) -> None:
        self.probability, self.interval, self.times, self.count = (
            probability, interval, times, 0)

    def should_fail(self) -> bool:
        if self.probability == 0 or self.times == 0:
            return False
        if self.interval > 1:
            self.count += 1
            if self.count % self.interval:
                return False
        if self.probability <= 99:  # only 100 always passes get_random_u32_below(100)
            raise AssertionError("the reference is used with probability 0 or 100 only")
        if self.times != -1:
            self.times -= 1
        return True


@pytest.mark.parametrize("interval, times", [(1, -1), (1, 3), (3, -1), (3, 2), (7, 5)])
def test_calls_one_by_one_fail_where_the_kernel_fails(interval, times):
    ref = KernelFaultAttr(100, interval, times)
    attr = FaultAttr("fail_x", 100, interval, times)
    got = [attr.should_fail() for _ in range(40)]
    assert got == [ref.should_fail() for _ in range(40)]
    assert attr.injected == sum(got) and attr.times == ref.times


@pytest.mark.parametrize("interval, times", [(1, 3), (3, 2), (4, 1), (5, -1)])
def test_a_batch_decides_as_its_calls_would_one_by_one(interval, times):
    """should_fail_many(n) == n calls of should_fail(), state included: then
    ``times`` is re-armed and the next calls still agree."""
    rng = random.Random(interval * 10 + times)
    ref = KernelFaultAttr(100, interval, times)
    attr = FaultAttr("fail_x", 100, interval, times)
    for _ in range(3):
        n = rng.randint(1, 30)
        assert attr.should_fail_many(n).tolist() == [ref.should_fail() for _ in range(n)]
        assert attr.times == ref.times
        attr.set(times=times)
        ref.times = times


def test_probability_zero_never_fails_and_counts_nothing():
    attr = FaultAttr("fail_x", 0, 3, -1)
    assert not attr.should_fail_many(100).any()
    attr.set(probability=100)
    assert attr.should_fail_many(3).tolist() == [False, False, True]


def test_probability_is_a_percentage():
    inj = FaultInjector(seed=1)
    attr = inj["fail_dma_desc"]
    attr.set(probability=20, times=-1)
    rate = attr.should_fail_many(20000).mean()
    assert 0.17 < rate < 0.23


def test_bad_values_change_nothing():
    attr = FaultAttr("fail_x")
    for kw in ({"probability": 101}, {"interval": 0}, {"times": -2}):
        with pytest.raises(ValueError):
            attr.set(**kw)
    assert (attr.probability, attr.interval, attr.times) == (0, 1, 1)


def test_every_point_is_seeded_apart_and_reports_what_it_injected():
    inj = FaultInjector(seed=5)
    for p in FaultInjector.POINTS:
        inj[p].set(probability=50, times=-1)
    draws = {p: tuple(inj[p].should_fail_many(64)) for p in FaultInjector.POINTS}
    assert len(set(draws.values())) == len(draws)
    assert inj.injected() == {p: sum(d) for p, d in draws.items()}
    assert inj.armed
