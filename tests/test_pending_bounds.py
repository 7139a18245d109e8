"""A user's pending index row keeps its bound (issue 22, finding 1): adopted events respect
max_events, and start-up refuses a configuration whose worst row cannot fit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from streams import settings as settings_module
from streams.core.pending import Item, Parked, Pending, Queue, adopt, first_seq, hold
from streams.core.reasons import Reason
from streams.core.state import UserState
from streams.core.step import merge_step
from streams.destinations import REGISTRY
from streams.envreader import SettingsError
from streams.settings import Settings


def raw(n: int) -> str:
    return json.dumps({"type": "track", "anonymousId": "anon", "event": f"E{n}", "messageId": f"m{n}"})


def visitor(held: int, parked: int = 0) -> Pending:
    """A visitor's waiting events for one destination: `parked` parked, then `held` held."""
    parks = tuple(Parked(1000 + i, raw(i), {}, {}, f"m{i}", 5.0, 1, 9.0) for i in range(parked))
    items = tuple(Item(2000 + i, 6.0, raw(parked + i)) for i in range(held))
    return Pending(3000, {"cs": Queue(held=items, parked=parks)})


def test_adopted_events_beyond_max_events_are_returned_newest_for_the_dead_letter_topic():
    mine = Pending()
    for n in range(3):
        mine, _ = hold(mine, "cs", raw(100 + n), {}, now=7.0, max_events=10, seq=(50 + n) << 20)
    first = first_seq(60)
    pending, overflow = adopt(mine, visitor(held=6, parked=2), first, max_events=10)
    held = pending.queue("cs").held
    assert len(held) == 10
    # the visitor's oldest 7 (its parked first) go first, then the user's own 3
    assert [i.raw for i in held] == [raw(n) for n in range(7)] + [raw(100 + n) for n in range(3)]
    assert [(d, i.raw) for d, i in overflow] == [("cs", raw(7))]  # the visitor's newest
    assert overflow[0][1].seq == first + 7
    # the same record processed again changes nothing, and cuts nothing again
    assert adopt(pending, visitor(held=6, parked=2), first, max_events=10) == (pending, [])


def test_without_room_every_adopted_event_goes_oldest_first_and_nothing_is_lost():
    mine = Pending()
    for n in range(4):
        mine, _ = hold(mine, "cs", raw(100 + n), {}, now=7.0, max_events=4, seq=(50 + n) << 20)
    pending, overflow = adopt(mine, visitor(held=3), first_seq(60), max_events=4)
    assert pending.queue("cs").held == mine.queue("cs").held
    assert [i.raw for _, i in overflow] == [raw(n) for n in range(3)]


def test_a_merge_step_dead_letters_the_overflow_as_replayable_pending_overflow():
    user = UserState(key="u1", user_id="u1")
    result = merge_step(
        user, Pending(), None, visitor(held=5), "anon", lambda g: None, [], first_seq(9), 9, max_pending=3
    )
    assert len(result.pending.queue("cs").held) == 3
    assert [(d.reason, d.destination, d.raw) for d in result.dead_letters] == [
        (Reason.PENDING_OVERFLOW, "cs", raw(3)),
        (Reason.PENDING_OVERFLOW, "cs", raw(4)),
    ]
    assert "anon" in result.dead_letters[0].detail and "replay" in result.dead_letters[0].detail


def test_start_up_refuses_max_events_whose_worst_index_row_cannot_fit(monkeypatch: pytest.MonkeyPatch):
    assert Settings.from_env({}).pending_max_events == 1000
    assert Settings.from_env({"CS_RELAY_PENDING_MAX_EVENTS": "2000"}).pending_max_events == 2000
    fourth = dataclasses.replace(REGISTRY[-1], key="a-fourth")
    monkeypatch.setattr(settings_module, "REGISTRY", (*REGISTRY, fourth))
    assert Settings.from_env({}).pending_max_events == 1000  # the default still fits
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"CS_RELAY_PENDING_MAX_EVENTS": "2000"})
    message = str(info.value)
    assert message.startswith("CS_RELAY_PENDING_MAX_EVENTS: 2000 is too many for 4 registered destinations")
    assert "set at most 1693" in message
    errors: list[str] = []
    Settings.from_env({"CS_RELAY_PENDING_MAX_EVENTS": "2000"}, errors=errors)  # cs-relay config says it too
    assert any(e.startswith("CS_RELAY_PENDING_MAX_EVENTS") for e in errors)


async def test_releasing_keeps_max_events_and_held_events_follow_as_deliveries_finish():
    """Released events wait in `releasing` until their delivery is confirmed; a user who
    could refill `held` and release again while deliveries are slow would grow it without
    bound. At most max_events are releasing; the rest follow as pending-done records come."""
    import asyncio

    from tests.runtime_world import FakeClient, World

    gate = asyncio.Event()
    w = World({"CS_RELAY_PENDING_MAX_EVENTS": "2"}, client=FakeClient(gate=gate))
    named = {"name": "Acme"}
    await w.publish(type="track", userId="u1", event="A", messageId="a")
    await w.publish(type="track", userId="u1", event="B", messageId="b")
    await w.publish(type="group", userId="u1", groupId="g1", traits=named, messageId="g1")  # releases A, B
    await w.publish(type="group", userId="u1", groupId="g2", messageId="g2")  # no name: held again
    await w.publish(type="track", userId="u1", event="C", messageId="c")
    await w.publish(type="track", userId="u1", event="D", messageId="d")
    await w.publish(type="group", userId="u1", groupId="g2", traits=named, messageId="g2n")
    queue = w.pending("u1")
    assert len(queue["releasing"]) == 2 and len(queue["held"]) == 2  # no room for C and D yet
    gate.set()
    assert await w.settle()
    assert w.client.events() == ["A", "B", "C", "D"]
    assert w.pending("u1") == {}
