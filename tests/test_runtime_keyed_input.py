"""CS_RELAY_INPUT_KEYED_BY_USER through the real runtime without a broker: input
records in their user's partition are routed there, without the by-user hop; the
others take it, and the state numbers the two topics' records apart."""

from __future__ import annotations

import json

from streams.core import control
from streams.core.positions import INPUT_BASE
from streams.runtime.outbox import BY_USER
from tests.runtime_world import BY_USER_TOPIC, INPUT, PARTITIONS, World

KEYED = {"CS_RELAY_INPUT_KEYED_BY_USER": "true"}


def segment_calls_on_by_user(world: World) -> list[bytes]:
    return [r.value for r in world.outbox.records if r.to == BY_USER and r.kind is None]


async def test_a_call_in_its_users_partition_is_delivered_without_the_by_user_hop_and_acknowledged():
    world = World(KEYED)
    group = await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    track = await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    assert world.client.events() == ["Report%20Built"]
    assert segment_calls_on_by_user(world) == []  # no re-keyed copies
    assert (INPUT, group.partition, 0) in world.acked and (INPUT, track.partition, 1) in world.acked
    assert world.rt.counters["in.track"] == 1 and world.rt.counters["rekeyed"] == 0
    assert world.rt.tables.users["u1"] is not None  # the user's state, written from the input record


async def test_a_call_outside_its_users_partition_takes_the_by_user_hop():
    world = World(KEYED)
    home = world.rt.partition_of("u1")
    await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    elsewhere = await world.publish_keyed(
        partition=(home + 1) % PARTITIONS, type="track", userId="u1", event="Misplaced", messageId="t1"
    )
    [copy] = segment_calls_on_by_user(world)
    assert json.loads(copy)["messageId"] == "t1"
    assert world.taken[-1].topic == BY_USER_TOPIC and world.taken[-1].partition == home
    assert world.client.events() == ["Misplaced"]
    assert world.rt.counters["rekeyed"] == 1
    assert (INPUT, elsewhere.partition, 0) in world.acked


async def test_held_events_from_both_topics_at_the_same_offset_are_both_kept_and_released_in_order():
    # Input offset 0 and by-user offset 0 of the same partition: numbered apart, the
    # second is not taken for the first one processed again.
    world = World(KEYED)
    home = world.rt.partition_of("u1")
    await world.publish_keyed(type="track", userId="u1", event="Early", messageId="t1")
    await world.publish_keyed(
        partition=(home + 1) % PARTITIONS, type="track", userId="u1", event="Misplaced", messageId="t2"
    )
    held = [h["seq"] for h in world.pending("u1")["held"]]
    assert len(held) == 2 and len(set(held)) == 2
    assert held[0] >= INPUT_BASE and held[1] < INPUT_BASE  # input first, then the by-user copy
    await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    assert world.client.events() == ["Early", "Misplaced"]
    assert world.pending("u1") == {}  # both confirmed by their own pending-done


async def test_an_input_record_processed_again_is_not_delivered_twice_and_a_duplicate_is_dropped():
    world = World(KEYED)
    await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish_keyed(type="track", userId="u1", event="Once", messageId="t1")
    await world.publish_keyed(type="track", userId="u1", event="Once", messageId="t1")  # the producer sent it twice
    assert world.client.events() == ["Once"] and world.rt.counters["duplicates"] == 1


async def test_invalid_input_is_dead_lettered_and_an_input_record_cannot_claim_another_source():
    world = World(KEYED)
    bad = world._incoming(INPUT, b"u1", b'{"type": "track", "userId": "u1"}', {}, 0)
    await world.intake(bad, keyed=True)
    assert await world.settle()
    [dead] = world.dead_letters()
    assert dead.reason == "missing_field" and dead.headers["cs-relay-stage"] == b"intake"
    assert (INPUT, 0, 0) in world.acked

    posing = {control.KIND_HEADER: b"pending-done", "cs-relay-source": b'{"topic": "elsewhere"}'}
    record = await world.publish_keyed(headers=posing, type="track", userId="u2", event="Real", messageId="t2")
    [held] = world.pending("u2")["held"]  # a Segment call, held (no group yet), from where it was read
    assert held["source"] == {"topic": INPUT, "partition": record.partition, "offset": record.offset}


async def test_an_input_record_routed_in_place_and_redone_through_the_hop_is_not_dropped_nor_held_twice():
    # Routed in place, then the worker stops before its offset is committed and comes
    # back with CS_RELAY_INPUT_KEYED_BY_USER off: the record is re-keyed and routed again.
    # It must be taken for the redo it is (delivered again: at least once), and what it
    # holds numbered as the first time.
    before = World(KEYED)
    await before.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    delivered = await before.publish_keyed(type="track", userId="u1", event="Sent", messageId="t1")
    held = await before.publish_keyed(type="track", userId="u2", event="Early", messageId="t2")
    assert before.client.events() == ["Sent"]
    first = [h["seq"] for h in before.pending("u2")["held"]]
    assert len(first) == 1

    after = World(tables=before.tables)  # the setting off, the same state
    after.offsets = before.offsets.copy()
    for record in (delivered, held):
        await after.intake(record)
    assert await after.settle()
    assert after.client.events() == ["Sent"]  # redone, not dropped
    assert after.rt.counters["duplicates"] == 0
    assert [h["seq"] for h in after.pending("u2")["held"]] == first  # held once, under its first number
    # A true duplicate still is one: the same messageId at another input offset.
    await after.publish(type="track", userId="u1", event="Sent", messageId="t1")
    assert after.client.events() == ["Sent"] and after.rt.counters["duplicates"] == 1
