"""Idempotent under redo, through the real runtime without a broker: after a crash or
a rebalance, Kafka hands over again every record past the committed offset, and the
tables already hold what processing them did. Processing a record a second time must
change nothing: no event held, parked or adopted twice (each would be delivered twice)."""

from __future__ import annotations

from streams.core.control import MergeProfile, Park
from tests.runtime_world import FakeClient, Incoming, World


def taken(world: World, kind: bytes | None = None, value_part: bytes = b"") -> Incoming:
    return next(r for r in world.taken if r.headers.get("cs-relay-kind") == kind and value_part in r.value)


async def test_a_held_event_processed_again_is_held_once():
    world = World()
    await world.publish(type="track", userId="u1", event="Early", messageId="t1")  # no group: held
    before = world.tables.pending["u1"]
    assert await world.redo(taken(world, None, b'"t1"'))
    assert world.tables.pending["u1"] == before
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    assert world.client.events() == ["Early"]


async def test_a_park_record_applied_again_parks_once():
    world = World(client=FakeClient(answers=[503]))
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="Failing", messageId="t1")
    parked = world.pending("u1")["parked"]
    assert len(parked) == 1
    assert await world.redo(taken(world, Park.KIND))
    assert world.pending("u1")["parked"] == parked


async def test_a_merge_profile_applied_again_adopts_once():
    world = World()
    await world.publish(type="page", anonymousId="anon-1", name="Pricing", messageId="p1")
    await world.publish(type="group", userId="u1", groupId="g1", messageId="g")  # no name: still held after
    await world.publish(type="identify", userId="u1", anonymousId="anon-1", messageId="i")
    adopted = world.pending("u1")["held"]
    assert len(adopted) == 1
    assert await world.redo(taken(world, MergeProfile.KIND))
    assert world.pending("u1")["held"] == adopted
