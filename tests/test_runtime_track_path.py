"""The common path of a track, through the real runtime without a broker: a user whose
group is known sends a track, routed in place (CS_RELAY_INPUT_KEYED_BY_USER) to
ClientSuccess and CustomerSuccessBox. What it does and, as much, what it leaves
undone: the table reads and writes it needs and no more."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import faust

from bench.tracehook import profiler
from bench.trackpath import summary
from streams.core.outcome import Dispatch
from streams.core.state import GroupState
from streams.runtime import routing, seentable, senders
from streams.runtime.rowcache import CachedRows
from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, PARTITIONS, FakeClient, World

BOTH = {
    "CS_RELAY_INPUT_KEYED_BY_USER": "true",
    "CSB_API_KEY": "csb-key-0123456789",
    "CSB_BASE_URL": "http://csb.example",
}


class Counted(dict):
    """A table that counts its reads (`get`) and writes per key."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def get(self, key: Any, default: Any = None) -> Any:
        self.reads[key] += 1
        return super().get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.writes[key] += 1
        super().__setitem__(key, value)


def both_partners(tables: Tables | None = None) -> tuple[World, FakeClient]:
    # The groups' rows kept until the table says they changed, as the worker keeps them
    # (streams.runtime.grouptable.cached).
    groups = CachedRows(Counted())
    world = World(BOTH, tables=tables or Tables(users=Counted(), pending={}, groups=groups, seen={}))
    csb = FakeClient("CustomerSuccessBox")
    world.rt.clients["customersuccessbox"] = csb
    return world, csb


async def joined(world: World) -> None:
    await world.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")


async def test_a_track_reads_the_users_group_once_for_both_partners_and_the_next_not_at_all(monkeypatch):
    world, csb = both_partners()
    await joined(world)
    groups = world.tables.groups
    assert isinstance(groups, CachedRows) and isinstance(groups.table, Counted) and "g1" in groups
    groups.clear()  # as after an assignment
    groups.table.reads.clear()
    decoded: list[str] = []
    from_dict = GroupState.from_dict.__func__  # type: ignore[attr-defined]

    def counted(cls: type[GroupState], data: Any) -> GroupState:
        if data is dict.get(groups.table, data["group_id"]):  # the group's row (not the user's copy)
            decoded.append(data["group_id"])
        return from_dict(cls, data)

    monkeypatch.setattr(GroupState, "from_dict", classmethod(counted))
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    assert world.client.events() == ["Report%20Built"]
    assert [r.json["accountId"] for r in csb.requests if r.path.endswith("/track")] == ["g1"]
    assert groups.table.reads == {"g1": 1} and decoded == ["g1"]
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t2")
    assert world.client.events() == ["Report%20Built"] * 2
    assert groups.table.reads == {"g1": 1} and decoded == ["g1"]  # the group kept, decoded


async def test_a_track_that_changes_nothing_writes_no_users_row_reaches_both_partners_and_survives_a_restart():
    world, csb = both_partners()
    await joined(world)
    users = world.tables.users
    assert isinstance(users, Counted)
    row = dict(users["u1"])
    users.writes.clear()
    world.now += 30  # within the minute: last_seen stays
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    assert users.writes == {} and users["u1"] == row
    assert world.client.events() == ["Report%20Built"]
    assert [r.path.rsplit("/", 1)[-1] for r in csb.requests] == ["account", "track"]

    # The restart: the same tables (restored from the changelogs), a new process.
    after, csb_after = both_partners(world.tables)
    after.now = world.now + 1
    await after.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")  # read again
    assert after.client.events() == [] and csb_after.requests == []  # a duplicate: delivered before
    await after.publish_keyed(type="track", userId="u1", event="Export Created", messageId="t2")
    assert after.client.events() == ["Export%20Created"]
    assert [r.json["accountId"] for r in csb_after.requests] == ["g1"]
    assert after.rt.counters["duplicates"] == 1 and after.dead_letters() == []


async def test_a_track_reads_the_users_row_once():
    """The step and the writing of its result share one read of the user's row
    (`routing.apply_step(..., stored=user)`)."""
    world, _csb = both_partners()
    await joined(world)
    users = world.tables.users
    assert isinstance(users, Counted)
    users.reads.clear()
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    assert world.client.events() == ["Report%20Built"]
    assert users.reads == {"u1": 1}


STATE = ("rows", "rowcache", "pendingstore", "seentable", "seenpacks", "groupview", "grouptable")


async def test_a_tracks_routing_reads_and_remembers_through_the_state_door_alone(tmp_path):
    """Routing a track of a user in a known group reads its state in one call into the
    state door (`Rows.read`: dedupe row, legacy row, user, pending record, group) and
    writes its dedupe entry in one more (`SeenPacks.remember`); the step's group lookups
    call nothing back; the packed row that takes the entry to Kafka is written by the
    state door's own coroutine, resumed, not entered (`OpenPacks._lingering`, woken by the
    linger timer), and no callback of the loop enters it when the row's write is done; no
    other state module is entered, `seenpacks.py` neither (docs/architecture.md, "One
    track's path"). The seen table is the worker's: RocksDB, under the row cache."""
    app = faust.App("track-path-state-door", store="rocksdb://", datadir=str(tmp_path))
    seen = seentable.seen_table(app, "seen", {})
    seen.send_changelog = _in_kafka  # type: ignore[method-assign]
    tables = Tables(users=CachedRows({}), pending=CachedRows({}), groups=CachedRows({}), seen=CachedRows(seen))
    world, csb = both_partners(tables)
    world.rt.changelog.watch(seen)  # as the app watches every table
    await joined(world)
    before = len(csb.requests)
    record = world._incoming(BY_USER_TOPIC, b"u1", json.dumps(TRACK).encode(), {}, world.rt.partition_of("u1"))
    records: list[Any] = []
    sys.setprofile(profiler(records, "streams."))
    try:
        done = world.route(record)
        routed = len(records)
        await world.settle()  # the packed row written (by `_lingering`), the deliveries, the ack
    finally:
        sys.setprofile(None)
    assert done.done() and world.client.events() == ["Report%20Built"] and len(csb.requests) == before + 1
    assert world.rt.seen_packs.written == 1 + 1  # the group call's row, the track's
    edges = _edges(records[:routed])
    entered = {module for caller, module in edges if module.startswith("streams.runtime.")}
    assert not entered & {f"streams.runtime.{m}" for m in STATE if m != "rows"}
    into_rows = {caller: n for (caller, module), n in edges.items() if module == "streams.runtime.rows"}
    assert into_rows.pop("streams.runtime.routing") == 2  # Rows.read, SeenPacks.remember
    assert all(not caller.startswith("streams.core") for caller in into_rows)  # the step calls nothing back
    assert ("streams.runtime.rows", "streams.runtime.acks") not in edges  # the batch's writes appended to, not asked
    later = _edges(records[routed:])
    assert not {module for _caller, module in later} & {f"streams.runtime.{m}" for m in STATE if m != "rows"}
    into_rows = {caller: n for (caller, module), n in later.items() if module == "streams.runtime.rows"}
    assert into_rows == {}  # no callback: the linger timer wakes `_lingering`, the acks follow the row's write
    resumed = {(caller, f) for _t, m, f, caller, fresh, _r in records[routed:] if m.endswith(".rows") and not fresh}
    assert resumed == {("the loop", "OpenPacks._lingering")}
    assert not [e for e in later if e[0] == "streams.runtime.rows" and e[1] == "streams.runtime.acks"]


def _edges(records: list[Any]) -> Counter[tuple[str, str]]:
    return Counter((caller, module) for _t, module, _f, caller, fresh, _r in records if fresh and caller != module)


TRACK = {"type": "track", "userId": "u1", "event": "Report Built", "messageId": "t-door"}


def _in_kafka(partition: int | None, key: str, value: Any) -> asyncio.Future[None]:
    written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    written.set_result(None)
    return written


async def test_a_tracks_routing_enters_the_routing_door_once_and_the_senders_once_each():
    """A track's routing, its step's effects, the senders and the client are three doors
    (docs/architecture.md, "One track's path"): the routing door is entered once, from
    intake (and the acks once, `close_batch`) (routing, step, state written, deliveries dispatched: no call into
    `handlers.py` or `effects.py`), each delivery enters the senders once (`submit`), and
    what the way only reads (the senders' hold, the catch-up, the share, the spilled
    pairs, the breaker) is read, not asked: no call into `parking.py`, `spilling.py`,
    `spillstore.py` or `sending.py`, no callback of the loop into them."""
    world, csb = both_partners()
    await joined(world)
    await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="warm")  # lanes started
    spills = world.rt.spills  # as the rescan after an assignment leaves it: every partition read, no spilled queue
    spills.assigned(range(PARTITIONS))
    for partition in range(PARTITIONS):
        spills.scanned_partition(partition)
    assert spills.complete and not spills.known
    records: list = []
    sys.setprofile(profiler(records))
    try:
        await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    finally:
        sys.setprofile(None)
    assert world.client.events() == ["Report%20Built"] * 2 and len(csb.requests) == 3  # account, two tracks
    edges = {e: n for e, n in summary(records)["edges"].items() if not e.startswith("tests.")}  # the world's looks
    assert [e for e in edges if e.endswith("streams.runtime.routing")] == [
        "streams.runtime.intake -> streams.runtime.routing"
    ]
    assert edges["streams.runtime.intake -> streams.runtime.routing"] == 1
    assert edges["streams.runtime.routing -> streams.runtime.senders"] == 1  # the step's two deliveries, one submit_all
    # The acks entered once per batch, `close_batch`: the redelivery guard's `handled_to`
    # read and the batch's changelog writes collected in an attribute, neither asked; and
    # no callback of the loop when a piece of work ends: the partition's acknowledging
    # coroutine, waiting for it, is resumed.
    assert [e for e in edges if e.endswith("streams.runtime.acks") and not e.startswith("the loop")] == [
        "streams.runtime.intake -> streams.runtime.acks"
    ]
    acks = summary([r for r in records if not r[3].startswith("tests.")])["by_module"]["streams.runtime.acks"]
    assert acks["entered"] == 1 and acks["resumed"] >= 1
    assert edges["streams.runtime.intake -> streams.runtime.acks"] == 1
    off = ("handlers", "effects", "parking", "spilling", "spillstore", "sending", "senderpool")
    assert [e for e in edges if any(m.rsplit(".", 1)[-1] in off for m in e.split(" -> "))] == []
    # No park applied since the step, which saw none parked: the pending row is not read again.
    assert {e for e in edges if e.startswith(("streams.runtime.routing", "streams.runtime.senders"))} == {
        "streams.runtime.routing -> streams.runtime.rows",  # Rows.read, SeenPacks.remember
        "streams.runtime.routing -> streams.runtime.senders",
    }


async def test_a_delivery_dispatched_before_a_park_was_applied_reads_the_row_and_parks_behind_it():
    """`senders.deliver` trusts the step's look at the pending row (no parked delivery of
    the user to the partner) only while no park record has been applied since
    (`ParkingMarks.parks`, moved by `retries.apply_park`): after one, it reads the row
    and parks behind the parked delivery rather than overtake it."""
    world, _csb = both_partners()
    await joined(world)
    dispatched: list[tuple[Dispatch, int | None]] = []
    real = routing.Deliveries.add

    def recorded(self: routing.Deliveries, item: Dispatch, parks: int | None = None) -> None:
        dispatched.append((item, parks))
        real(self, item, parks)

    routing.Deliveries.add = recorded  # type: ignore[method-assign]
    try:
        world.client.answers = [503]  # ClientSuccess: retryable, so it parks
        await world.publish_keyed(type="track", userId="u1", event="Report Built", messageId="t1")
    finally:
        routing.Deliveries.add = real  # type: ignore[method-assign]
    item, parks = next((i, p) for i, p in dispatched if i.destination == "clientsuccess")
    assert parks == 0 and world.rt.parking.marks.parks == 1  # the step saw none parked; one park applied since
    assert len(world.rt.rows.pending("u1").queue("clientsuccess").parked) == 1
    asked = len(world.client.requests)
    later = replace(item, message_id="t2", seq=item.seq + 1)  # as a call dispatched before the park was applied
    assert await senders.deliver(world.rt, "u1", later, parks) is None
    assert len(world.client.requests) == asked  # not sent: parked behind
    assert world.rt.counters["parked.clientsuccess"] == 2
