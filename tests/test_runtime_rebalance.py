"""A partition revoked from this worker, through the real runtime without a broker.

Once the rebalance goes on, whoever gets the partition (another worker, or this one
again) reads its events again from the committed offset and delivers them. Anything
this worker still sent for those users would reach the partner after, or between, the
new owner's requests: a user's older traits arriving last (seen in
tests/test_faults_scale.py as CustomerSuccessBox holding older traits after a worker
joined). So on revocation the worker stops its deliveries for those users, running or
queued, and acknowledges none of their events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from streams.core.control import KIND_HEADER, Park
from tests.runtime_world import BY_USER_TOPIC, PARTITIONS, CapturingOutbox, FakeClient, World


async def test_a_revoked_partition_sends_nothing_more_and_acknowledges_nothing():
    world = World(client=FakeClient())
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="group", userId="u2", groupId="g1", traits={"name": "Acme"}, messageId="g2")
    partition = world.rt.partition_of("u1")
    other = next(u for u in (f"v{i}" for i in range(100)) if world.rt.partition_of(u) != partition)
    await world.publish(type="group", userId=other, groupId="g1", traits={"name": "Acme"}, messageId="g3")
    world.client.gate = asyncio.Event()  # the partner is slow: deliveries wait
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    await world.publish(type="track", userId="u1", event="Second", messageId="t2")
    await world.publish(type="track", userId=other, event="Elsewhere", messageId="t3")
    assert world.client.events().count("First") == 1 and "Second" not in world.client.events()
    acked_before = list(world.acked)

    assert await world.rt.revoked([(BY_USER_TOPIC, partition)])

    world.client.gate.set()
    assert await world.settle()
    assert "Second" not in world.client.events()  # queued behind First: never sent
    assert "Elsewhere" in world.client.events()  # another partition's delivery went on
    new_acks = [a for a in world.acked if a not in acked_before]
    assert all(p != partition for topic, p, _ in new_acks if topic == BY_USER_TOPIC)
    assert world.rt.acks.in_flight == 0
    assert not [k for k in world.rt.sending.in_flight if k[0] == "u1"]


class ParksHeldBack(CapturingOutbox):
    """Kafka is slow to take park records: their produce waits until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(
        self, to: str, *, key: bytes | None, value: bytes, headers: Mapping[str, bytes], partition: int | None = None
    ) -> asyncio.Future:
        if headers.get(KIND_HEADER) == Park.KIND:
            await self.gate.wait()
        return await super().send(to, key=key, value=value, headers=headers, partition=partition)


async def test_a_park_cut_short_by_a_revocation_leaves_no_mark_when_the_partition_comes_back():
    """Issue 22, finding 2: the delivery counts its park before the park record is
    handed to the producer; the revocation cancels it, so the record never comes. A
    mark kept for a partition that comes back held every later call of the user to
    that partner until a restart."""
    world = World(client=FakeClient())
    world.outbox = world.rt.outbox = ParksHeldBack()
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    world.client.answers = [503]
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    assert world.rt.parking.marks.parking[("u1", "clientsuccess")] == 1  # the park record waits for the producer
    first = next(r for r in world.taken if b'"t1"' in r.value)

    partition = world.rt.partition_of("u1")
    assert await world.rt.revoked([(BY_USER_TOPIC, partition)])
    world.rt.assigned(set(range(PARTITIONS)))  # an eager rebalance: the partition comes back
    world.outbox.gate.set()
    assert await world.settle()
    assert world.controls(Park.KIND) == []  # the park was cancelled before Kafka had it

    # Read again from the committed offset: the unacknowledged call is redone.
    assert await world.redo(first)
    await world.publish(type="track", userId="u1", event="Second", messageId="t2")
    assert world.client.events()[-2:] == ["First", "Second"]
    assert not world.rt.parking.marks.parking
    assert world.tables.pending.get("u1") is None  # nothing held, parked or releasing
