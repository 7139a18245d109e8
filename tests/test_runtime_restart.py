"""Redelivery after a restart, through the real runtime without a broker: an event
released to a partner stays in `releasing` until its pending-done record is applied;
a worker that starts with such an event and no delivery of it in flight sends it again
when the user's next event comes, before that event. The worker that still carries the
delivery does not send it twice."""

from __future__ import annotations

import asyncio

from streams.core import control
from streams.core.control import PendingDone
from streams.runtime.outbox import BY_USER
from tests.runtime_world import FakeClient, Produced, World


async def released_but_unconfirmed(world: World) -> None:
    """A held track released by the group call, whose delivery never finishes."""
    await world.publish(type="track", userId="u1", event="Early", messageId="t1")
    world.client.gate = asyncio.Event()  # the partner never answers (the worker dies)
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    assert [i["seq"] for i in world.pending("u1")["releasing"]] == [1]
    assert world.client.events() == ["Early"]


async def test_a_releasing_event_with_no_delivery_in_flight_is_sent_again_by_the_next_event():
    before = World()
    await released_but_unconfirmed(before)
    assert world_is_stuck(before)

    # The restart: the same tables (restored from the changelogs), a new process.
    after = World(client=FakeClient(), tables=before.tables)
    await after.publish(type="track", userId="u1", event="Later", messageId="t2")
    assert after.client.events() == ["Early", "Later"]  # again, and first
    assert [r.key for r in after.controls(PendingDone.KIND)] == [b"u1"]
    assert after.tables.pending.get("u1") is None
    assert after.dead_letters() == []


async def test_the_worker_still_delivering_it_does_not_send_it_twice():
    world = World()
    await released_but_unconfirmed(world)
    await world.publish(type="track", userId="u1", event="Later", messageId="t2")
    assert world.client.events() == ["Early"]  # "Later" waits in the user's chain, "Early" is not resent
    world.client.gate.set()
    assert await world.settle()
    assert world.client.events() == ["Early", "Later"]
    assert world.tables.pending.get("u1") is None


def world_is_stuck(world: World) -> bool:
    return world.rt.acks.in_flight > 0 and ("u1", "clientsuccess", 1) in world.rt.sending.in_flight


async def test_a_late_pending_done_never_confirms_a_later_event_of_the_user():
    """A user's empty pending record is deleted; the next one must not number its events
    from 1 again, or a pending-done still on its way for an old event (a redo sends a
    second one) would confirm the new event while its delivery is under way."""
    world = World()
    await world.publish(type="track", userId="u1", event="Early", messageId="t1")  # no group yet: held
    first = world.pending("u1")["held"][0]["seq"]
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g1")
    assert world.client.events() == ["Early"] and world.tables.pending.get("u1") is None  # confirmed, deleted
    await world.publish(type="group", userId="u1", groupId="g2", messageId="g2")  # no name: ClientSuccess waits
    await world.publish(type="track", userId="u1", event="Later", messageId="t2")
    world.client.gate = asyncio.Event()  # the partner is slow: Later stays in `releasing`
    await world.publish(type="group", userId="u1", groupId="g2", traits={"name": "Beta"}, messageId="g3")
    later = world.pending("u1")["releasing"][0]["seq"]
    assert later > first

    value, headers = control.encode(PendingDone("clientsuccess", first))  # the old event's, late
    world.outbox.records.append(Produced(BY_USER, b"u1", value, headers, None))
    await world.settle()
    assert [i["seq"] for i in world.pending("u1")["releasing"]] == [later]  # still carried
    world.client.gate.set()
    assert await world.settle()
    assert world.client.events() == ["Early", "Later"] and world.tables.pending.get("u1") is None


async def test_a_released_event_the_destination_no_longer_takes_leaves_releasing(tmp_path):
    """Issue 22, finding 8: the mapping file changed between the release and a restart,
    and ClientSuccess no longer takes the event. It was left in `releasing` for good (the
    user's pending row never emptied); now it is skipped, and counted, as the rules say."""
    before = World()
    await released_but_unconfirmed(before)
    mappings = tmp_path / "mappings.toml"
    mappings.write_text('[clientsuccess]\ndeny = ["Early"]\n')

    after = World({"CS_RELAY_MAPPINGS": str(mappings)}, client=FakeClient(), tables=before.tables)
    await after.publish(type="track", userId="u1", event="Later", messageId="t2")
    assert after.client.events() == ["Later"]
    assert after.tables.pending.get("u1") is None and after.tables.payloads == {}
    assert after.rt.counters["skipped.clientsuccess"] == 1
    assert after.dead_letters() == []
