"""The adaptive per-partner rate (streams.runtime.ratelimit), against a fake clock."""

from __future__ import annotations

import pytest

from streams.runtime.ratelimit import AdaptiveRate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_seconds_worth_goes_at_once_then_requests_are_spaced():
    clock = Clock()
    rate = AdaptiveRate(10, clock=clock)
    assert [rate.reserve() for _ in range(10)] == [0.0] * 10
    assert rate.reserve() == pytest.approx(0.1)
    assert rate.reserve() == pytest.approx(0.2)  # waiters queue behind each other
    clock.now = 1.0
    assert rate.reserve() == 0.0  # a second later the bucket has refilled


def test_a_429_halves_the_rate_which_climbs_back_without_more():
    clock = Clock()
    rate = AdaptiveRate(10, clock=clock, recovery=30)
    rate.throttled()
    assert rate.rate == pytest.approx(5)
    rate.throttled()
    assert rate.rate == pytest.approx(2.5)
    clock.now = 15.0
    assert rate.rate == pytest.approx(7.5)
    clock.now = 100.0
    assert rate.rate == pytest.approx(10)  # never above the configured rate


def test_the_rate_never_falls_below_its_floor():
    rate = AdaptiveRate(10, clock=Clock(), floor=0.1)
    for _ in range(20):
        rate.throttled()
    assert rate.rate == pytest.approx(1.0)


def test_after_a_429_the_next_request_waits():
    clock = Clock()
    rate = AdaptiveRate(4, clock=clock)
    rate.throttled()
    assert rate.reserve() == pytest.approx(0.5)  # 1 token at 2/s


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError):
        AdaptiveRate(0)
