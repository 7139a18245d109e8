"""Parked deliveries (streams.core.pending): a retryable failure waits durably in the user's
pending record, ahead of that user's later events for the same partner."""

from __future__ import annotations

from streams.core.pending import Parked, Pending, hold, next_retry_at, park, parked_full, retried
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.customersuccessbox import mapping as csb
from tests.coretools import pending_due as due
from tests.factories import msg
from tests.test_relay import World

HOUR = 3600.0


def parked(n: int, first_failed_at: float = 0.0, next_at: float = 10.0) -> Parked:
    return Parked(
        0,
        f'{{"n": {n}}}',
        {"offset": n},
        {"method": "POST", "path": f"/{n}", "json": {}},
        f"m{n}",
        first_failed_at,
        attempts=2,
        next_at=next_at,
    )


def test_parking_appends_in_order_and_leaves_releasing():
    p = park(Pending(), cs.KEY, parked(1))
    p = park(p, cs.KEY, parked(2))
    assert [x.raw for x in p.queue(cs.KEY).parked] == ['{"n": 1}', '{"n": 2}']
    assert [x.seq for x in p.queue(cs.KEY).parked] == [1, 2]
    assert Pending.from_dict(p.to_dict()) == p  # survives the changelog


def test_only_the_due_head_of_each_destination_is_retried():
    p = park(park(Pending(), cs.KEY, parked(1, next_at=10)), cs.KEY, parked(2, next_at=0))
    p = park(p, csb.KEY, parked(3, next_at=50))
    assert [(d, x.raw) for d, x in due(p, now=20)] == [(cs.KEY, '{"n": 1}')]
    assert next_retry_at(p) == 10
    assert due(p, now=5) == []


def test_a_successful_retry_removes_the_head_and_makes_the_next_due_now():
    p = park(park(Pending(), cs.KEY, parked(1)), cs.KEY, parked(2, next_at=999))
    head = p.queue(cs.KEY).parked[0]
    p, given_up = retried(p, cs.KEY, head.seq, outcome="done", error="", now=100, delay=30, window=HOUR)
    assert given_up is None
    assert [x.raw for x in p.queue(cs.KEY).parked] == ['{"n": 2}']
    assert p.queue(cs.KEY).parked[0].next_at == 100


def test_a_retryable_failure_reschedules_within_the_window_and_gives_up_after_it():
    p = park(Pending(), cs.KEY, parked(1, first_failed_at=0))
    seq = p.queue(cs.KEY).parked[0].seq
    p, given_up = retried(p, cs.KEY, seq, outcome="retry", error="503", now=100, delay=60, window=HOUR)
    assert given_up is None and p.queue(cs.KEY).parked[0].next_at == 160
    assert p.queue(cs.KEY).parked[0].attempts == 3
    p, given_up = retried(p, cs.KEY, seq, outcome="retry", error="503", now=HOUR - 10, delay=60, window=HOUR)
    assert given_up is not None and given_up.attempts == 4 and given_up.last_error == "503"
    assert not p.queue(cs.KEY)


def test_a_final_failure_gives_the_head_up_and_a_stale_result_changes_nothing():
    p = park(Pending(), cs.KEY, parked(1))
    assert retried(p, cs.KEY, 99, outcome="done", error="", now=1, delay=1, window=HOUR) == (p, None)
    p, given_up = retried(p, cs.KEY, 1, outcome="fail", error="400", now=1, delay=1, window=HOUR)
    assert given_up is not None and not p.queue(cs.KEY)


def test_later_events_wait_behind_a_parked_delivery_and_flow_after_it():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    w.pending["u1"] = park(w.pending["u1"], cs.KEY, parked(1))
    w.sent.clear()
    w.feed(msg("track", event="Behind"))
    assert w.sent_to(cs.KEY) == []  # held behind the parked one
    assert [d.request.json["event"] for d in w.sent_to(csb.KEY)] == ["Behind"]  # the other partner flows
    head = w.pending["u1"].queue(cs.KEY).parked[0]
    w.pending["u1"], _ = retried(
        w.pending["u1"], cs.KEY, head.seq, outcome="done", error="", now=1, delay=0, window=HOUR
    )
    w.feed(msg("identify", traits={"email": "a@b.c"}))
    assert [d.request.path.rsplit("/", 1)[1] for d in w.sent_to(cs.KEY)] == ["Behind"]


def test_a_delivery_being_parked_blocks_the_destination_before_its_record_lands():
    from streams.core.step import step
    from tests.factories import raw
    from tests.test_relay import DESTS

    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    m = msg("track", event="Racing")
    result = step(
        m.key,
        m,
        raw(m),
        {},
        w.users["u1"],
        w.pending["u1"],
        w.groups.get,
        DESTS,
        now=w.now,
        now_iso="2026-11-22T00:00:00+00:00",
        max_pending=10,
        max_pending_age=HOUR,
        blocked=frozenset({cs.KEY}),
    )
    assert [d.destination for d in result.dispatches] == [csb.KEY]
    assert result.pending.queue(cs.KEY).held


def test_a_call_parked_or_held_under_its_number_already_is_not_parked_again():
    """A call sent at once parks under its own number (issue 22, finding 3): its park
    record from before a crash and the one its redo writes make one parked delivery, and
    a redo that held the call behind a delivery parked meanwhile keeps it held only."""
    number = 7 << 20
    once = park(Pending(), cs.KEY, parked(1), seq=number)
    assert park(once, cs.KEY, parked(1), seq=number) == once
    held, _ = hold(Pending(), cs.KEY, '{"n": 1}', {}, 0.0, 10, number)
    assert park(held, cs.KEY, parked(1), seq=number) == held
    assert not parked_full(held, cs.KEY, 0, None, number)  # there already: no overflow either
