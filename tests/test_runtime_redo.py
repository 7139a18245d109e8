"""Idempotent under redo, through the real runtime without a broker: after a crash or
a rebalance, Kafka hands over again every record past the committed offset, and the
tables already hold what processing them did. Processing a record a second time must
change nothing: no event held, parked or adopted twice (each would be delivered twice)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from streams.core.control import MergeProfile, Park
from streams.core.decision import PartnerRequest
from streams.runtime import retries
from streams.runtime.delivery import Result
from tests.runtime_world import BY_USER_TOPIC, PARTITIONS, FakeClient, Incoming, World


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


@dataclass
class Gated(FakeClient):
    """The partner: a request for an event named in `gates` waits for its gate."""

    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        gate = self.gates.get(request.path.rsplit("/", 1)[-1])
        if gate is not None:
            await gate.wait()
        return await super().send(request, **kwargs)


async def revoked_and_read_again(world: World, user: str, gate: asyncio.Event) -> None:
    """A rebalance takes the user's partition (stopping its deliveries) and gives it
    back; `gate` opens; the partition's records from the committed offset are handled
    again."""
    partition = world.rt.partition_of(user)
    records = [r for r in world.taken if r.partition == partition]
    committed = min(r.offset for r in records if (BY_USER_TOPIC, partition, r.offset) not in world.acked)
    assert await world.rt.revoked([(BY_USER_TOPIC, partition)])
    world.rt.assigned(set(range(PARTITIONS)))
    gate.set()
    for record in records:
        if record.offset >= committed:
            assert await world.redo(record)


async def test_a_pending_done_handled_again_sends_what_it_released_when_a_revoke_stopped_that():
    """At most CS_RELAY_PENDING_MAX_EVENTS events are releasing at once; a pending-done
    releases the next held one. Its pending row (Third releasing) reaches Kafka, a
    revoke stops Third's delivery and the record is not acknowledged: whoever handles
    it again must send Third, or nothing ever does (the user sends nothing more)."""
    first, third = asyncio.Event(), asyncio.Event()
    world = World({"CS_RELAY_PENDING_MAX_EVENTS": "2"}, client=Gated(gates={"First": first, "Third": third}))
    await world.publish(type="track", userId="u1", event="First", messageId="t1")  # no group: held
    await world.publish(type="track", userId="u1", event="Second", messageId="t2")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="group", userId="u1", groupId="g2", messageId="g2")  # a group without a name yet
    await world.publish(type="track", userId="u1", event="Third", messageId="t3")  # held for it
    await world.publish(type="group", userId="u2", groupId="g2", traits={"name": "Beta"}, messageId="g3")
    assert world.pending("u1")["held"] and len(world.pending("u1")["releasing"]) == 2  # no room for Third
    first.set()
    await world.settle()
    assert world.client.events() == ["First", "Second"]
    assert ['"Third"' in i["raw"] for i in world.pending("u1")["releasing"]] == [True]  # on its way, held up
    await revoked_and_read_again(world, "u1", third)
    assert world.client.events() == ["First", "Second", "Third"]
    assert world.rt.rows.pending("u1").is_empty()


async def test_a_retried_record_handled_again_sends_what_it_released_when_a_revoke_stopped_that():
    """Held events wait behind a parked delivery; the retry that delivers it releases
    them (its pending row reaches Kafka). A revoke stops their delivery and the retried
    record is not acknowledged: whoever handles it again must send them."""
    second = asyncio.Event()
    world = World(client=Gated(answers=[503], gates={"Second": second}))
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="First", messageId="t1")  # parked
    await world.publish(type="group", userId="u1", groupId="g2", messageId="g2")  # a group without a name yet
    await world.publish(type="track", userId="u1", event="Second", messageId="t2")  # held for it
    await world.publish(type="group", userId="u2", groupId="g2", traits={"name": "Beta"}, messageId="g3")
    assert world.pending("u1")["held"] and world.pending("u1")["parked"]  # behind First
    world.now = world.rt.rows.pending("u1").queue("clientsuccess").parked[0].next_at + 0.1
    await retries.tick(world.rt)
    await world.settle()
    assert world.client.events() == ["First", "First"] and world.pending("u1")["releasing"]
    await revoked_and_read_again(world, "u1", second)
    assert world.client.events() == ["First", "First", "Second"]
    assert world.rt.rows.pending("u1").is_empty()
