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

from tests.runtime_world import BY_USER_TOPIC, FakeClient, World


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
    assert not [k for k in world.rt.in_flight if k[0] == "u1"]
