"""Dead letters written again by a redo (issue 22, finding 6), through the real runtime
without a broker: a record processed again after a crash writes its dead letters again
(Kafka may or may not have had them), and each copy carries the same identity, so that
replaying both (`cs-relay dlq replay`) delivers the event once."""

from __future__ import annotations

import asyncio
import json

import pytest

from streams.core.control import MergeRequest, Park
from streams.core.deadletter import DeadLetterRecord, read_headers
from streams.ops.dlq import replay_headers
from streams.runtime import effects, merge
from tests.runtime_world import INPUT, FakeClient, Produced, World

ID = "cs-relay-dead-letter-id"


async def replay(world: World, letters: list[Produced]) -> None:
    """`cs-relay dlq replay` of `letters`, each with the headers it would give them."""
    for letter in letters:
        at = world.outbox.records.index(letter)  # its offset in the dead-letter topic
        dl = DeadLetterRecord(at, 0, letter.key, letter.value, read_headers(letter.headers.items()), "dlq")
        record = world._incoming(INPUT, letter.key, letter.value, dict(replay_headers(dl)), 0)
        await world.intake(record)
    assert await world.settle()


def taken(world: World, kind: bytes | None, part: bytes = b""):
    return [r for r in world.taken if r.headers.get("cs-relay-kind") == kind and part in r.value]


async def test_a_park_redone_against_a_full_queue_is_replayed_once():
    world = World({"CS_RELAY_PENDING_MAX_EVENTS": "1"}, client=FakeClient())
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    world.client.gate = asyncio.Event()
    world.client.answers = [503]
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    await world.publish(type="track", userId="u1", event="Second", messageId="t2")  # behind First's delivery
    world.client.gate.set()
    assert await world.settle()
    [letter] = world.dead_letters()
    assert letter.reason == "pending_overflow" and b"Second" in letter.value

    second_park = taken(world, Park.KIND, b"Second")[0]
    assert await world.redo(second_park)  # processed again after a crash
    first, again = world.dead_letters()

    await world.drain_retries()  # the partner is back: First goes
    await replay(world, [first, again])
    assert world.client.events().count("Second") == 1
    assert first.headers.get(ID) == again.headers.get(ID) is not None


async def test_a_rejected_call_redone_is_replayed_once():
    world = World()
    await world.publish(type="group", userId="u1", groupId="g1", messageId="g")  # no name: ClientSuccess refuses it
    [letter] = world.dead_letters()
    assert letter.reason == "group_without_name"
    assert await world.redo(taken(world, None, b'"g"')[0])
    first, again = world.dead_letters()

    await replay(world, [first, again])
    assert len(world.dead_letters()) == 3  # the replay refused once more, and once only
    assert world.rt.counters["duplicates"] == 1
    assert first.headers.get(ID) == again.headers.get(ID) is not None


async def test_the_cut_of_a_hand_over_redone_is_replayed_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(merge, "HANDOVER_MAX_BYTES", 6_000)
    world = World()
    for n in range(10):
        body = {"type": "track", "anonymousId": "anon-1", "event": f"E{n}", "properties": {"pad": "x" * 900}}
        await world.publish(**body, messageId=f"t{n}")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await effects.control_to_user(world.rt, "anon-1", MergeRequest("u1"))
    request = world._incoming("cs-relay-by-user", *_last(world), world.rt.partition_of("anon-1"))
    world.routed = len(world.outbox.records)
    await asyncio.gather(world.route(request), world.route(request))  # processed again before its answer came
    letters = world.dead_letters()
    cut = len(letters) // 2
    assert cut and [d.value for d in letters[:cut]] == [d.value for d in letters[cut:]]

    world.routed = world.outbox.records.index(letters[-1]) + 1  # the requests naming the cut, then the merge
    assert await world.settle()
    delivered = [e for e in world.client.events() if e.startswith("E")]
    await replay(world, letters)
    replayed = [e for e in world.client.events() if e.startswith("E")][len(delivered) :]
    assert sorted(replayed) == sorted(json.loads(d.value)["event"] for d in letters[:cut])
    assert [d.headers.get(ID) for d in letters[:cut]] == [d.headers.get(ID) for d in letters[cut:]]


def _last(world: World) -> tuple[bytes | None, bytes, dict]:
    last = world.outbox.records[-1]
    return last.key, last.value, dict(last.headers)
