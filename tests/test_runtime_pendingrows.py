"""The pending record's rows through the real runtime (tests/runtime_world.py): a user
whose partner is down writes one payload row per event, not the whole backlog; nothing
is left behind once everything is delivered; the parked queue's bound dead-letters
with the event's original bytes."""

from __future__ import annotations

import json
from typing import Any

from streams.core import pendingrows
from streams.core.control import Park
from streams.core.incoming import Incoming
from streams.core.pending import Parked, Pending, hold, park, release
from streams.runtime import retries
from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, FakeClient, World


class CountingTable(dict[str, Any]):
    """A table that counts its writes and the bytes written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.bytes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        self.bytes += len(json.dumps(value))
        super().__setitem__(key, value)


def world_with_counters(env: dict[str, str] | None = None, answers: list[int] | None = None) -> World:
    tables = Tables(users={}, pending=CountingTable(), groups={}, seen={}, payloads=CountingTable())
    return World(env, client=FakeClient(answers=answers or []), tables=tables)


async def drain(world: World) -> None:
    for _ in range(100):
        due = world.rt.parking.marks.retry_due_at
        if not due:
            return
        world.now = max(world.now, min(due.values())) + 0.1
        await retries.tick(world.rt)
        assert await world.settle(spins=5000)
    raise AssertionError("the parked deliveries did not drain")


async def test_a_user_waiting_on_a_sick_partner_writes_one_payload_row_per_event():
    world = world_with_counters(answers=[503] * 1000)
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    index, payloads = world.tables.pending, world.tables.payloads
    assert isinstance(index, CountingTable) and isinstance(payloads, CountingTable)
    padding = "p" * 2000
    await world.publish(type="track", userId="u1", event="E0", properties={"pad": padding}, messageId="t0")
    sizes = []
    for n in range(1, 60):
        writes, index_bytes = payloads.writes, index.bytes
        await world.publish(type="track", userId="u1", event=f"E{n}", properties={"pad": padding}, messageId=f"t{n}")
        assert payloads.writes == writes + 1  # its own row, nothing else
        sizes.append(index.bytes - index_bytes)
    assert len(payloads) == 60 and all(padding not in json.dumps(v) for v in index.values())
    # The index row grows by tens of bytes per waiting event, not by the events' 2 KB.
    assert sizes[-1] - sizes[0] < 60 * 60, sizes
    assert sizes[-1] < 5_000

    world.client.answers.clear()  # the partner is back
    await drain(world)
    assert world.client.events()[-60:] == [f"E{n}" for n in range(60)]
    assert dict(index) == {} and dict(payloads) == {}  # no row left behind
    assert world.dead_letters() == []


def incoming(offset: int) -> Incoming:
    return Incoming(b"u1", b"{}", {}, "by-user", 0, offset)


def parked_delivery(message_id: str) -> Parked:
    raw = json.dumps({"type": "track", "userId": "u1", "event": message_id, "messageId": message_id})
    return Parked(0, raw, {"topic": "in", "partition": 0, "offset": 1}, {"body": {}}, message_id, 1.0, 1, 2.0, "503")


async def test_a_delivery_parked_beyond_the_bound_goes_to_the_dead_letter_topic_with_its_bytes():
    world = World({"CS_RELAY_PENDING_MAX_EVENTS": "2"})
    p = park(Pending(), "clientsuccess", parked_delivery("m1"), seq=1)
    p = park(p, "clientsuccess", parked_delivery("m2"), seq=2)
    p, _ = hold(p, "clientsuccess", parked_delivery("m3").raw, {}, now=1.0, max_events=2, seq=3)
    p, _ = release(p, "clientsuccess", 1)
    world.rt.rows.store_pending("u1", p)

    # A new delivery, then the released m3, ask to park behind a full queue.
    for offset, released, message_id in ((10, None, "m4"), (11, 3, "m3")):
        work = retries.apply_park(
            world.rt, incoming(offset), Park("clientsuccess", released, parked_delivery(message_id))
        )
        for w in work:
            await w
    queue = world.rt.rows.pending("u1").queue("clientsuccess")
    assert [p.message_id for p in queue.parked] == ["m1", "m2"] and queue.releasing == () and queue.held == ()
    dead = world.dead_letters()
    assert [d.reason for d in dead] == ["pending_overflow", "pending_overflow"]
    assert [json.loads(d.value)["messageId"] for d in dead] == ["m4", "m3"]
    assert dead[0].value == parked_delivery("m4").raw.encode()
    assert b"CS_RELAY_PENDING_MAX_EVENTS" in dead[0].headers["cs-relay-detail"]
    assert sorted(world.tables.payloads) == sorted(
        pendingrows.payload_key("u1", "clientsuccess", seq) for seq in (1, 2)
    )

    # The same park record processed again (a redo) parks what fits once, not twice.
    world2 = World({"CS_RELAY_PENDING_MAX_EVENTS": "3"})
    world2.rt.rows.store_pending("u1", park(Pending(), "clientsuccess", parked_delivery("m1"), seq=1))
    for _ in range(2):
        retries.apply_park(world2.rt, incoming(12), Park("clientsuccess", None, parked_delivery("m5")))
    assert [p.message_id for p in world2.rt.rows.pending("u1").queue("clientsuccess").parked] == ["m1", "m5"]


async def test_a_version_1_pending_row_left_by_an_older_worker_is_read_and_split_at_its_next_write():
    from tests.test_state_versions import PENDING_V1_BEFORE_PARKING

    world = World()
    # Records of older workers were numbered by a counter (1, 2, ...): this one's events
    # come after others on the by-user topic, as they did then.
    world.offsets[(BY_USER_TOPIC, world.rt.partition_of("u1"))] = 100
    row = json.loads(PENDING_V1_BEFORE_PARKING)
    for queue in row["queues"].values():
        for item in (*queue["held"], *queue["releasing"]):
            item["held_at"] = world.now - 60  # recent: not expired by the next event
    world.tables.pending["u1"] = row
    before = world.rt.rows.pending("u1")
    held = before.queue("clientsuccess").held
    assert held and all(i.raw for i in held)
    # Its released event is being delivered by this process (a fresh one would decide it
    # again: its raw text here is no call, so it would be skipped).
    world.rt.sending.in_flight.update(("u1", "clientsuccess", i.seq) for i in before.queue("clientsuccess").releasing)
    # A later event for the user (held too: no group yet) writes the record the new way.
    await world.publish(type="track", userId="u1", event="Later", messageId="later")
    row = world.tables.pending["u1"]
    assert row["v"] == pendingrows.INDEX_VERSION and "raw" not in json.dumps(row)
    queue = world.rt.rows.pending("u1").queue("clientsuccess")
    assert [i.raw for i in queue.held[: len(held)]] == [i.raw for i in held]
    assert queue.releasing == before.queue("clientsuccess").releasing  # still to be confirmed
    assert len(world.tables.payloads) == len(queue.held) + len(queue.releasing)  # a row for each
