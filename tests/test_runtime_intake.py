"""Intake and routing errors, through the real runtime without a broker."""

from __future__ import annotations

import json

from streams.runtime import intake
from streams.runtime.outbox import BY_USER
from tests.runtime_world import INPUT, World


async def test_a_valid_call_is_re_keyed_by_user_with_its_source_and_an_invalid_one_dead_lettered():
    world = World()
    await world.publish(type="track", userId="u1", event="E", messageId="t1")
    [by_user] = [r for r in world.outbox.records if r.to == BY_USER]
    assert by_user.key == b"u1"
    assert json.loads(by_user.headers["cs-relay-source"]) == {"topic": INPUT, "partition": 0, "offset": 0}

    bad = b'{"type": "track", "userId": "u1"}'  # no event name
    record = world._incoming(INPUT, b"k", bad, {}, 0)
    await (await intake.admit(world.rt, record))
    [dead] = world.dead_letters()
    assert (dead.value, dead.key, dead.reason) == (bad, b"k", "missing_field")
    assert dead.headers["cs-relay-stage"] == b"intake"
    assert world.ops.stats.dead_letters[("intake", "missing_field", "")] == 1


async def test_a_record_that_cannot_be_routed_is_dead_lettered_and_acknowledged():
    world = World()
    record = world._incoming("cs-relay-by-user", b"u1", b'{"type": "track"', {}, 0)  # not even JSON
    world.route(record)
    assert await world.settle()
    [dead] = world.dead_letters()
    assert dead.reason == "routing_error" and dead.headers["cs-relay-stage"] == b"routing"
    assert world.acked == [("cs-relay-by-user", 0, 0)]
