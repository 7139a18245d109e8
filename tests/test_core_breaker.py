"""The per-destination circuit breaker (streams/core/breaker.py), driven by a fake clock."""

from __future__ import annotations

from streams.core.breaker import Breaker, Breakers, Policy, Signal, State, signal_of
from tests.coretools import breaker_states

S, F, A, N = Signal.SUCCESS, Signal.FAILURE, Signal.AUTH, Signal.ANSWERED


def test_answers_are_read_as_signals_for_the_whole_destination():
    assert signal_of("done", 200) is S
    assert signal_of("retry", 503) is F and signal_of("retry", None) is F and signal_of("retry", 429) is F
    assert signal_of("fail", 401) is A and signal_of("fail", 403) is A
    assert signal_of("fail", 400) is N and signal_of("fail", 422) is N


def test_consecutive_failures_open_it_then_one_probe_goes_and_a_success_closes_it():
    b = Breaker(Policy(failures=3, open_seconds=5))
    for t in range(2):
        b.record(F, now=t)
    assert b.state is State.CLOSED and b.allow(2)
    b.record(F, now=2)
    assert b.state is State.OPEN and not b.allow(3) and b.wait(3) == 4
    assert not b.allow(6.9)
    assert b.allow(7) and b.state is State.HALF_OPEN  # the probe
    assert not b.allow(7.1)  # one probe at a time
    b.record(S, now=7.5)
    assert b.state is State.CLOSED and b.allow(7.6) and b.wait(7.6) == 0


def test_a_failed_probe_opens_it_again_for_twice_as_long_up_to_the_cap():
    b = Breaker(Policy(failures=1, open_seconds=5, max_open_seconds=12))
    b.record(F, now=0)
    periods = []
    now = 0.0
    for _ in range(3):
        now = b.until
        assert b.allow(now)
        b.record(F, now=now)
        periods.append(b.until - now)
    assert periods == [10, 12, 12]


def test_a_probe_without_an_answer_lets_another_go_after_the_probe_timeout():
    b = Breaker(Policy(failures=1, open_seconds=1, probe_timeout=30))
    b.record(F, now=0)
    assert b.allow(1) and not b.allow(20) and b.wait(20) == 11
    assert b.allow(31)


def test_answers_to_requests_sent_before_it_opened_do_not_extend_it():
    b = Breaker(Policy(failures=2, open_seconds=5))
    b.record(F, now=0)
    b.record(F, now=0)
    for _ in range(10):
        b.record(F, now=1)
    assert b.until == 5


def test_a_failure_ratio_opens_it_even_between_successes():
    b = Breaker(Policy(failures=100, ratio=0.5, window=10))
    for t in range(10):
        b.record(F if t % 2 else S, now=t)
    assert b.state is State.OPEN


def test_a_429_with_retry_after_opens_it_at_once_for_that_long_capped():
    b = Breaker(Policy(failures=5, max_retry_after=300))
    b.record(F, now=0, retry_after=20)
    assert b.state is State.OPEN and b.wait(0) == 20
    assert not b.allow(19) and b.allow(20)
    b.record(F, now=20, retry_after=600)
    assert b.wait(20) == 300


def test_401s_and_nothing_else_pause_it_until_a_probe_succeeds():
    b = Breaker(Policy(auth_failures=3, pause_seconds=30))
    b.record(A, now=0)
    b.record(A, now=0)
    assert b.state is State.CLOSED
    b.record(A, now=1)
    assert b.state is State.PAUSED and not b.allow(2) and b.wait(2) == 29
    assert b.allow(31) and b.state is State.PAUSED and not b.allow(31)  # one probe, still paused
    b.record(A, now=32)  # the key is still wrong
    assert b.state is State.PAUSED and b.wait(32) == 30
    assert b.allow(62)
    b.record(S, now=62.5)
    assert b.state is State.CLOSED and b.allow(63)


def test_a_401_between_other_answers_does_not_pause_it():
    b = Breaker(Policy(auth_failures=3))
    for t in range(10):
        b.record(A if t % 2 else N, now=t)
    assert b.state is State.CLOSED


def test_a_401_is_a_requests_own_refusal_only_when_others_succeeded_since():
    b = Breaker()
    assert not b.refused_alone(failed_at=10)
    b.record(S, now=5)
    assert not b.refused_alone(failed_at=10)
    b.record(S, now=11)
    assert b.refused_alone(failed_at=10)


def test_a_paused_destination_is_reported_once_a_minute():
    b = Breaker(Policy(auth_failures=1, log_every=60))
    assert not b.pause_report_due(0)
    b.record(A, now=0)
    assert [t for t in range(0, 200, 10) if b.pause_report_due(t)] == [0, 60, 120, 180]


def test_status_and_one_breaker_per_destination():
    breakers = Breakers(Policy(failures=1, open_seconds=5))
    breakers["customersuccessbox"].record(F, now=100, reason="answered 503")
    assert breakers["clientsuccess"].state is State.CLOSED
    assert breaker_states(breakers) == {"clientsuccess": "closed", "customersuccessbox": "open"}
    status = breakers["customersuccessbox"].status(now=102)
    assert status == {
        "state": "open",
        "since_seconds": 2,
        "next_probe_in_seconds": 3,
        "consecutive_failures": 1,
        "last_error": "answered 503",
    }


def test_a_breaker_that_closes_again_is_reported_once():
    breakers = Breakers(Policy(failures=1, open_seconds=5))
    assert breakers.closed_since_last_look() == []
    breakers["csb"].record(F, now=0)
    assert breakers.closed_since_last_look() == []
    assert breakers["csb"].allow(5)
    breakers["csb"].record(S, now=6)
    assert breakers.closed_since_last_look() == ["csb"]
    assert breakers.closed_since_last_look() == []
