"""A crash, through two runtimes that share only the tables: the first worker dies with
everything it kept in memory (parking marks, chains, acknowledgements), and a second,
built afresh on the same tables, reads the partition again from the committed offset,
as Kafka hands it to the next owner. (tests/test_runtime_redo.py redoes records in the
same runtime, which keeps its memory.)"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from streams.core.control import Park
from streams.runtime import intake
from streams.runtime.outbox import BY_USER
from tests.runtime_world import BY_USER_TOPIC, INPUT, PARTITIONS, FakeClient, Incoming, Produced, World


async def enqueue(world: World, **body: Any) -> None:
    """A call taken by intake onto the by-user topic, not routed yet."""
    record = world._incoming(INPUT, None, json.dumps(body).encode(), {}, 0)
    await intake.admit(world.rt, record)


def take(world: World) -> Incoming:
    """The next record of the by-user topic, as the route agent takes it."""
    while True:
        produced = world.outbox.records[world.routed]
        world.routed += 1
        if produced.to == BY_USER:
            break
    assert produced.key is not None
    partition = world.rt.partition_of(produced.key.decode())
    record = world._incoming(BY_USER_TOPIC, produced.key, produced.value, produced.headers, partition)
    world.taken.append(record)
    return record


def left_in_log(world: World) -> list[Produced]:
    return [r for r in world.outbox.records[world.routed :] if r.to == BY_USER]


@pytest.mark.parametrize("second_park_in_kafka", [True, False])
async def test_a_park_in_flight_at_a_crash_keeps_the_order_and_delivers_once(second_park_in_kafka: bool):
    """Issue 22, finding 3. E1 fails and parks; its park record P1 is in Kafka, later in
    the log than E2, and E1 is acknowledged (committed). E2 waits behind E1 and parks
    as P2 (which Kafka may or may not have), unacknowledged. The worker dies. The next
    owner redoes E2 before it reads P1: it must not send E2 before E1, nor twice."""
    old = World(client=FakeClient())
    await old.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await enqueue(old, type="track", userId="u1", event="First", messageId="t1")
    await enqueue(old, type="track", userId="u1", event="Second", messageId="t2")
    old.client.answers = [503]
    first, second = take(old), take(old)
    first_done = old.route(first)
    second_done = old.route(second)  # sent behind E1's delivery, still under way
    await first_done  # parked: P1 produced, E1 done
    await second_done  # behind E1: P2 produced
    assert [p.kind for p in left_in_log(old)] == [Park.KIND, Park.KIND]
    assert old.client.events() == ["First"]
    log = left_in_log(old) if second_park_in_kafka else left_in_log(old)[:1]

    # The crash: only the tables and Kafka's log survive. E1 is committed, E2 is not.
    new = World(client=FakeClient(), tables=old.tables)
    new.now = old.now
    new.offsets = Counter(old.offsets)  # the log goes on where it was
    new.outbox.records, new.routed = list(log), len(log)  # in Kafka, not fetched yet
    new.rt.assigned(set(range(PARTITIONS)))
    new.route(second)  # the first record past the committed offset
    for _ in range(50):  # its delivery may run before the next fetch
        await asyncio.sleep(0)
    new.routed = 0
    assert await new.settle()
    await new.drain_retries()

    assert new.client.events() == ["First", "Second"]
    assert new.dead_letters() == [] and new.tables.pending.get("u1") is None
