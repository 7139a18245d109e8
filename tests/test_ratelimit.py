"""The adaptive per-partner rate (streams.runtime.ratelimit): its bookkeeping against a fake
clock; its waiters, and the client that waits on it, on the real loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.core.decision import PartnerRequest
from streams.core.retry import Outcome
from streams.runtime.delivery import PartnerClient
from streams.runtime.ratelimit import AdaptiveRate
from tests.test_delivery_bounds import serve


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_one_seconds_worth_goes_at_once_then_requests_are_spaced():
    clock = Clock()
    rate = AdaptiveRate(10, clock=clock)
    assert [rate.take() for _ in range(10)] == [0.0] * 10
    assert rate.take() == pytest.approx(0.1)  # nothing taken: the same wait when asked again
    assert rate.take() == pytest.approx(0.1)
    clock.now = 0.05
    assert rate.take() == pytest.approx(0.05)
    clock.now = 0.1
    assert rate.take() == 0.0
    assert rate.take() == pytest.approx(0.1)
    clock.now = 10.0
    assert [rate.take() for _ in range(11)] == [0.0] * 10 + [pytest.approx(0.1)]  # never more than a second's worth


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
    assert rate.take() == pytest.approx(0.5)  # 1 token at 2/s


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError):
        AdaptiveRate(0)


# ------------------------------------------------------------- waiters that give up (issue 22, finding 4)


async def test_a_waiter_cancelled_before_its_turn_leaves_its_token_to_the_next():
    """A request that gave up while it waited (its delivery's deadline, a revoked
    partition) never went out: the requests after it must not wait for its turn too."""
    rate = AdaptiveRate(20)
    for _ in range(20):  # the burst: the bucket is empty now
        await rate.acquire()
    waiters = [asyncio.create_task(rate.acquire()) for _ in range(40)]  # two seconds' worth
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    started = time.monotonic()
    await asyncio.wait_for(rate.acquire(), 5)
    assert time.monotonic() - started < 0.75  # its turn: a token's 0.05 s, not the 2 s of the 40


async def test_waiters_whose_time_runs_out_leave_without_a_token_and_the_rate_holds():
    rate = AdaptiveRate(20)
    for _ in range(20):
        await rate.acquire()
    started = time.monotonic()
    got = await asyncio.gather(*(rate.acquire(within=1.0) for _ in range(60)))
    assert time.monotonic() - started < 2.5  # each left when its time ran out, not after its turn
    assert 10 <= sum(got) <= 21  # a second's worth at 20/s went (fewer only on a slow loop), never more
    started = time.monotonic()
    assert await rate.acquire(within=1.0)  # the 40 that left took nothing
    assert time.monotonic() - started < 0.75


async def test_requests_that_cannot_have_a_token_within_their_budget_are_not_sent_nor_counted_as_failures():
    """The limiter's own queue is not the partner's failure: a request whose budget ends
    before its turn comes back unsent (RETRY, no attempt) and its breaker is not told."""
    server, seen = await serve([])
    client = PartnerClient("Partner", str(server.make_url("")), rate_limit=2, backoff_base=0.01)
    answers: list[int | None] = []

    def on_answer(outcome: Outcome, status: int | None, retry_after: float | None) -> bool:
        answers.append(status)
        return True

    try:
        results = await asyncio.gather(
            *(client.send(PartnerRequest("POST", "/x", {"n": n}), budget=0.3, on_answer=on_answer) for n in range(6))
        )
    finally:
        await client.close()
        await server.close()
    assert sorted(r.outcome.value for r in results) == ["done", "done", "retry", "retry", "retry", "retry"]
    assert len(seen) == 2 and answers == [200, 200]  # the burst of 2; the breaker heard of those only
    unsent = [r for r in results if r.outcome is Outcome.RETRY]
    assert all(r.status is None and r.attempts == 0 and "rate limit" in r.excerpt for r in unsent)


async def test_a_turn_that_would_leave_the_request_too_little_of_its_budget_is_not_taken():
    """A request sent at the very end of its budget times out on its way, answered or
    not, and its retry reaches the partner twice: a turn is waited for only while the
    request keeps its own timeout (or half the budget left, when that is shorter)."""
    server, seen = await serve([], delay=0.6)
    client = PartnerClient("Partner", str(server.make_url("")), rate_limit=1, timeout=5.0, max_retries=0)
    try:
        first, second = await asyncio.gather(
            *(client.send(PartnerRequest("POST", "/x", {"n": n}), budget=1.5) for n in range(2))
        )
    finally:
        await client.close()
        await server.close()
    assert (first.outcome, first.attempts) == (Outcome.DONE, 1)
    assert (second.outcome, second.status, second.attempts) == (Outcome.RETRY, None, 0)  # its turn came at 1 s of 1.5
    assert len(seen) == 1
