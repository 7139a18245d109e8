"""Replays of dead letters through the real runtime without a broker (issue 16, item 6):
a replay carries the dead letter's place in the dead-letter topic, and the user's
partition routes each dead letter once, however often it is replayed."""

from __future__ import annotations

import json
from typing import Any

from streams.core.deadletter import DeadLetterRecord
from streams.ops.dlq import replay_headers
from tests.runtime_world import INPUT, World

GROUP = {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}, "messageId": "g-1"}
TRACK = {"type": "track", "userId": "u1", "event": "SignedUp", "messageId": "t-1"}


async def replay(world: World, dl: DeadLetterRecord) -> None:
    """What `cs-relay dlq replay` produces, taken by intake and routed."""
    record = world._incoming(INPUT, dl.key, dl.value, dict(replay_headers(dl)), 0)
    await world.intake(record)
    assert await world.settle()


def dead_letter(body: dict[str, Any], offset: int, destination: str = "clientsuccess") -> DeadLetterRecord:
    headers = {"reason": "partner_refused", "destination": destination}
    return DeadLetterRecord(offset, 2, b"u1", json.dumps(body).encode(), headers, topic="segment-events-dlq")


async def test_a_dead_letter_replayed_twice_is_delivered_once():
    world = World()
    world.client.answers = [422]  # the track is refused
    await world.publish(**GROUP)
    await world.publish(**TRACK)
    assert world.client.events() == ["SignedUp"] and len(world.dead_letters()) == 1
    dl = dead_letter(TRACK, 41)
    await replay(world, dl)
    assert world.client.events() == ["SignedUp", "SignedUp"]  # the replay went, though t-1 was seen
    await replay(world, dl)
    assert world.client.events() == ["SignedUp", "SignedUp"]  # the same dead letter again: dropped
    assert world.rt.counters["duplicates"] == 1
    await replay(world, dead_letter(TRACK, 42))  # another dead letter of the same call goes
    assert world.client.events() == ["SignedUp"] * 3


async def test_replay_headers_name_the_dead_letter_when_its_place_is_known():
    dl = dead_letter(TRACK, 41)
    assert dict(replay_headers(dl))["cs-relay-replay-of"] == b"segment-events-dlq/2/41"
    unknown = DeadLetterRecord(-1, -1, b"u1", b"{}", {"destination": "clientsuccess"})  # the console's journal
    assert "cs-relay-replay-of" not in dict(replay_headers(unknown))
