"""Groups written by their own partition, and users released when another user's call
makes their group known, through the real runtime without a broker."""

from __future__ import annotations

import asyncio

from streams.core import control
from streams.core.control import GroupKnown, GroupUpdate, GroupWait
from streams.runtime import routing
from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, CapturingOutbox, Produced, World


class PartitionLog(dict):
    """A table that notes the by-user partition of the record being handled at each write."""

    def __init__(self, handling: list) -> None:
        super().__init__()
        self.handling = handling
        self.written_in: list[tuple[str, int]] = []

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.written_in.append((key, self.handling[-1].partition))


def watched_world(monkeypatch) -> tuple[World, PartitionLog]:
    handling: list = []
    groups = PartitionLog(handling)
    world = World(tables=Tables(users={}, pending={}, groups=groups, seen={}))
    original = routing.handle

    def handle(rt, record, kinds):
        handling.append(record)
        return original(rt, record, kinds)

    monkeypatch.setattr(routing, "handle", handle)
    return world, groups


def users_in_other_partitions(world: World, group_id: str, n: int) -> list[str]:
    home = world.rt.partition_of(group_id)
    return [u for u in (f"user-{i}" for i in range(200)) if world.rt.partition_of(u) != home][:n]


async def test_a_group_is_written_only_in_its_own_partition(monkeypatch):
    world, groups = watched_world(monkeypatch)
    a, b = users_in_other_partitions(world, "g1", 2)
    await world.publish(type="group", userId=a, groupId="g1", traits={"name": "Acme"}, messageId="g-a")
    await world.publish(type="group", userId=b, groupId="g1", traits={"plan": "pro"}, messageId="g-b")
    home = world.rt.partition_of("g1")
    assert groups.written_in == [("g1", home), ("g1", home)]
    assert world.tables.groups["g1"]["name"] == "Acme" and world.tables.groups["g1"]["traits"]["plan"] == "pro"
    updates = [r for r in world.taken if r.headers.get(control.KIND_HEADER) == GroupUpdate.KIND]
    assert [(r.key, r.topic, r.partition) for r in updates] == [(b"g1", BY_USER_TOPIC, home)] * 2


async def test_another_users_group_call_releases_a_user_waiting_for_the_group():
    world = World()
    waiting, caller = users_in_other_partitions(world, "g1", 2)
    # The group is named nowhere yet: ClientSuccess holds the waiting user's track.
    await world.publish(type="group", userId=waiting, groupId="g1", messageId="g-w")
    await world.publish(type="track", userId=waiting, event="Early", messageId="t1")
    assert world.client.events() == [] and len(world.pending(waiting)["held"]) == 1
    assert world.tables.waiters["g1"]["users"] == {waiting: world.tables.groups["g1"]["updated_at"]}

    world.now += 5
    await world.publish(type="group", userId=caller, groupId="g1", traits={"name": "Acme"}, messageId="g-c")
    assert world.client.events() == ["Early"]  # released without the waiting user's next call
    assert world.client.requests[0].json["identity"]["organization"] == {"id": "g1", "name": "Acme"}
    assert world.tables.pending.get(waiting) is None and world.tables.waiters.get("g1") is None
    assert [d.reason for d in world.dead_letters()] == ["group_without_name"]  # the nameless group call


async def test_a_user_who_saw_an_older_group_is_told_at_once():
    world = World()
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    value, headers = control.encode(GroupWait("u2", None))  # u2 saw no record of g1
    world.outbox.records.append(Produced("by-user", b"g1", value, headers, None))
    assert await world.settle()
    told = [r for r in world.outbox.records if r.kind == GroupKnown.KIND]
    assert [r.key for r in told] == [b"u2"]
    assert world.tables.waiters.get("g1") is None


async def test_the_callers_own_next_call_uses_its_copy_before_the_group_is_written():
    """The group-update is on its way (here: lost) when the worker restarts and the
    caller's next track comes: the caller's row has the group as its call made it."""
    world = World()
    lost = DroppingOutbox(GroupUpdate.KIND)
    lost.records = world.outbox.records
    world.outbox = world.rt.outbox = lost
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    assert world.tables.groups.get("g1") is None

    restarted = World(tables=world.tables)  # the same tables, a new process (nothing in memory)
    await restarted.publish(type="track", userId="u1", event="Right away", messageId="t1")
    assert restarted.client.events() == ["Right%20away"]
    await restarted.publish(type="track", userId="u2", event="Not mine", messageId="t2", context={"groupId": "g1"})
    assert restarted.client.events() == ["Right%20away"]  # another user: waits for the group's partition


async def test_another_user_routed_by_the_same_worker_sees_a_new_group_at_once():
    world = World()
    lost = DroppingOutbox(GroupUpdate.KIND)  # the group's partition has not written it yet
    lost.records = world.outbox.records
    world.outbox = world.rt.outbox = lost
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u2", event="Named it", messageId="t2", context={"groupId": "g1"})
    assert world.client.events() == ["Named%20it"]


class DroppingOutbox(CapturingOutbox):
    def __init__(self, kind: bytes) -> None:
        super().__init__()
        self.kind = kind

    async def send(self, to, *, key, value, headers, partition=None):
        if headers.get(control.KIND_HEADER) == self.kind:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return await super().send(to, key=key, value=value, headers=headers, partition=partition)
