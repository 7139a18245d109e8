"""Fairness (issue 23): one user's burst cannot stall the others. Past its share of
deliveries in memory (CS_RELAY_USER_SHARE), a user's further deliveries to a partner are
spilled to durable rows in the handling of their event (acknowledged once those are
written), then drained in order through the user's chain. Through the real runtime
without a broker (tests/runtime_world.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.core import spill
from streams.core.decision import PartnerRequest
from streams.runtime import acks, spilling
from streams.runtime.delivery import Result
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Tables
from streams.runtime.spillstore import SpillStore
from streams.settings import Settings
from tests.runtime_world import BY_USER_TOPIC, PARTITIONS, FakeClient, World

CS = "clientsuccess"


class SlowUserClient(FakeClient):
    """A partner that answers `slow`'s requests only as `release` lets them through
    (everybody else's at once)."""

    def __init__(self, slow: str) -> None:
        super().__init__()
        self.slow = slow
        self.release = asyncio.Semaphore(0)
        self.asked: list[PartnerRequest] = []

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        self.asked.append(request)
        if request.json.get("identity", {}).get("user", {}).get("id") == self.slow:
            await self.release.acquire()
        return await super().send(request, **kwargs)

    def of(self, user: str) -> list[str]:
        return [r.path.rsplit("/", 1)[-1] for r in self.asked if r.json["identity"]["user"]["id"] == user]


def tables() -> Tables:
    return Tables(users={}, pending={}, groups={}, seen={})


def queue(world: World, user: str) -> spill.SpillQueue:
    """The user's ClientSuccess spill queue, as its rows say (not the worker's memory)."""
    first = spill.first_of(world.tables.spill.get(spill.index_key(user, CS)))
    return spill.SpillQueue(
        first, spill.probe_next(first, lambda n: spill.order_key(user, CS, n) in world.tables.spill)
    )


async def group(world: World, user: str) -> None:
    await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")


async def burst(world: World, user: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await world.publish(type="track", userId=user, event=f"E{i}", messageId=f"{user}-{i}")


async def until(condition: Callable[[], bool], world: World, timeout: float = 5.0) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await world.settle(spins=5)


async def test_a_burst_spills_past_the_share_and_nobody_else_waits_behind_it():
    client = SlowUserClient("burst")
    world = World({"CS_RELAY_USER_SHARE": "4"}, client=client, tables=tables())
    await group(world, "burst")
    await group(world, "other")
    await burst(world, "burst", 20)
    # Four in memory (one asked, three behind it in the chain), sixteen spilled.
    assert client.of("burst") == ["E0"]
    assert queue(world, "burst").size == 16 and len(world.tables.spillrows) == 16
    assert world.rt.counters["spilled.clientsuccess"] == 16
    # Another user's call goes at once, however many of burst's wait.
    await world.publish(type="track", userId="other", event="Hello", messageId="o-1")
    assert client.of("other") == ["Hello"]
    # Once the share's four are answered, every event of the burst is acknowledged: the
    # spilled ones needed only their rows; nothing holds the window.
    for _ in range(4):
        client.release.release()
    await until(lambda: world.rt.acks.in_flight == 0, world)
    assert client.of("burst")[:5] == ["E0", "E1", "E2", "E3", "E4"]
    # The rest drains in order, a share at a time, each confirmed by a spill-done record.
    for _ in range(16):
        client.release.release()
    await until(lambda: queue(world, "burst").size == 0, world)
    assert client.of("burst") == [f"E{i}" for i in range(20)]
    assert world.tables.spill == {} and world.tables.spillrows == {}
    assert world.controls(b"spill-done") and world.dead_letters() == []


async def test_order_is_kept_across_spill_park_and_drain():
    world = World({"CS_RELAY_USER_SHARE": "2"}, tables=tables())
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    world.client.answers = [200, 200, 200, 200, 503]  # E4, a spilled one, parks
    await burst(world, "u1", 10)
    assert queue(world, "u1").size == 8
    world.client.gate.set()
    await until(lambda: queue(world, "u1").size == 0, world)
    # E4 parked; those after it waited behind it (parked too), in order.
    assert [p["message_id"] for p in world.pending("u1")["parked"]] == [f"u1-{i}" for i in range(4, 10)]
    await world.drain_retries("u1")
    sent = world.client.events()
    assert sent == ["E0", "E1", "E2", "E3", "E4", *[f"E{i}" for i in range(4, 10)]]
    assert world.rt.rows.pending("u1").is_empty() and world.tables.spillrows == {}
    assert world.dead_letters() == []


async def test_a_redo_of_a_spilling_event_writes_no_second_copy():
    world = World({"CS_RELAY_USER_SHARE": "1"}, tables=tables())
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 3)
    assert queue(world, "u1").size == 2
    rows = dict(world.tables.spillrows)
    for record in [r for r in world.taken if b"u1-2" in r.value or b"u1-1" in r.value]:
        await world.redo(record)  # Kafka hands them again (a crash before their commit)
    assert queue(world, "u1").size == 2 and world.tables.spillrows == rows
    world.client.gate.set()
    await until(lambda: queue(world, "u1").size == 0, world)
    assert world.client.events() == ["E0", "E1", "E2"]


async def test_a_new_worker_delivers_what_a_stopped_one_spilled_in_order():
    shared = tables()
    first = World({"CS_RELAY_USER_SHARE": "2"}, tables=shared)
    await group(first, "u1")
    first.client.gate = asyncio.Event()  # the worker stops before any answer
    await burst(first, "u1", 8)
    assert queue(first, "u1").size == 6
    taken = [r for r in first.taken if b'"track"' in r.value]
    assert await first.rt.sending.senders.cancel(lambda key: True, 1.0)

    # The next worker: the same tables (restored from the changelogs), every partition
    # assigned. It reads again what was not committed (all eight: the first two were
    # never answered, and the spilled ones come after them in the partition).
    second = World({"CS_RELAY_USER_SHARE": "2"}, tables=shared)
    second.offsets = first.offsets.copy()
    second.rt.assigned(set(range(PARTITIONS)))
    for record in taken:
        second.route(record)
    started = time.monotonic()
    while queue(second, "u1").size or second.rt.acks.in_flight:
        assert time.monotonic() - started < 5, "timed out"
        await spilling.tick(second.rt)  # the timer: finds the spilled queues, drains once caught up
        await second.settle(spins=5)
    assert second.client.events() == [f"E{i}" for i in range(8)]
    assert shared.spillrows == {}


def test_the_configuration_reference_states_the_share_and_the_spill_bound_as_the_settings_have_them():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    d = Settings()
    assert f"| `CS_RELAY_USER_SHARE` | `{d.user_share}` | 1 – {spill.MAX_SHARE:,} |" in doc
    assert f"| `CS_RELAY_SPILL_MAX_EVENTS` | `{d.spill_max_events}` | 0 – {spill.MAX_EVENTS_BOUND:,} |" in doc
    assert f"window of {acks.MAX_UNACKED_EVENTS:,} unacknowledged events" in doc


async def test_a_spilled_delivery_that_cannot_be_read_waits_and_is_never_confirmed_unsent():
    world = World({"CS_RELAY_USER_SHARE": "1"}, tables=tables())
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 3)
    key = spill.body_key("u1", CS, world.tables.spill[spill.order_key("u1", CS, 0)])
    body = world.tables.spillrows.pop(key)  # E1's row unreadable (as when the tables close)
    world.client.gate.set()
    await world.settle()
    assert world.client.events() == ["E0"] and queue(world, "u1").size == 2
    assert world.controls(b"spill-done") == [] and world.rt.counters["spill_rows_unreadable"] == 1
    world.tables.spillrows[key] = body  # readable again: the next look sends it, then E2
    spilling.refill(world.rt, "u1", CS)
    await until(lambda: queue(world, "u1").size == 0, world)
    assert world.client.events() == ["E0", "E1", "E2"]


async def test_a_stopping_worker_hands_no_more_spilled_deliveries_to_its_chains():
    world = World({"CS_RELAY_USER_SHARE": "1"}, tables=tables())
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 3)
    world.rt.spills.stop()  # streams.runtime.relayapp.RelayApp.on_stop, before the tables close
    world.client.gate.set()
    await world.settle()
    assert world.client.events() == ["E0"] and queue(world, "u1").size == 2  # the next worker's


def test_a_body_named_by_a_later_order_row_stays_until_that_one_is_confirmed():
    """A redo whose first body write was lost spills the call again at the end: its
    first order row is confirmed first and must not take the body the second names."""
    store = SpillStore({}, {}, lambda user: 0)
    pair = ("u1", CS)

    def call(seq: int) -> Any:
        row = {"request": {"method": "POST", "path": f"/e{seq}", "json": {}}, "raw": "{}", "message_id": f"m{seq}"}
        return spill.dispatch_of(row, CS, seq)

    store.index[spill.order_key("u1", CS, 0)] = 7  # durable; its body write was not
    assert store.append(pair, call(8), store.queue(pair), None)  # ordinal 1
    assert store.append(pair, call(7), store.queue(pair), None)  # the redo of 7: ordinal 2
    assert store.confirm(pair, [7]) == 1  # ordinal 0 goes; 7's body names ordinal 2: it stays
    assert store.body(pair, 7)["n"] == 2 and store.queue(pair) == spill.SpillQueue(1, 3)
    assert store.confirm(pair, [8, 7]) == 2 and store.bodies == {} and store.index == {}


async def test_a_revoked_partition_s_spilled_deliveries_stop_and_resume_when_it_comes_back():
    world = World({"CS_RELAY_USER_SHARE": "1"}, tables=tables())
    partitions = set(range(PARTITIONS))
    world.rt.assigned(partitions)
    await world.settle()  # the caught-up records read back
    await spilling.tick(world.rt)
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 4)
    assert queue(world, "u1").size == 3
    mine = world.rt.partition_of("u1")
    assert await world.rt.revoked([(world.rt.by_user_topic, mine)])
    world.client.gate.set()
    await world.settle()
    assert world.client.events() == ["E0"] and queue(world, "u1").size == 3  # the next owner's
    world.rt.assigned(partitions)  # it comes back: found by the rescan, drained in order
    started = time.monotonic()
    while queue(world, "u1").size:
        assert time.monotonic() - started < 5, "timed out"
        await spilling.tick(world.rt)
        await world.settle(spins=5)
    assert world.client.events() == ["E0", "E1", "E2", "E3"]


class BrokenClient(FakeClient):
    """A partner client that fails outright on E1 (a bug, a refused record): not an answer."""

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        if request.path.endswith("/E1"):
            raise RuntimeError("broken")
        return await super().send(request, **kwargs)


async def test_a_spilled_delivery_whose_work_fails_for_good_stops_the_worker_unconfirmed():
    world = World({"CS_RELAY_USER_SHARE": "1"}, client=BrokenClient(), tables=tables())
    stopped: list[BaseException] = []
    world.rt.stop = stopped.append
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 2)
    assert queue(world, "u1").size == 1
    world.client.gate.set()
    await world.settle()
    assert world.client.events() == ["E0"]  # E0's event acknowledged, E1 spilled and failed
    assert stopped and "spill" in (world.rt.failure or "")
    assert queue(world, "u1").size == 1 and world.controls(b"spill-done") == []  # sent again by the next worker


class ClosedAtStopClient(FakeClient):
    """E1 waits for `hold`, then fails as a closed client does."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = asyncio.Event()

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        if request.path.endswith("/E1"):
            await self.hold.wait()
            raise RuntimeError("Session is closed")
        return await super().send(request, **kwargs)


async def test_a_spilled_delivery_ended_by_the_stop_does_not_crash_the_stopping_worker():
    """A stopping worker closes its partner clients while spilled deliveries still run
    (the stop waits for events' work only): their failure is the stop's, not a crash
    (seen in the e2e stop test as exit status 1)."""
    client = ClosedAtStopClient()
    world = World({"CS_RELAY_USER_SHARE": "1"}, client=client, tables=tables())
    stopped: list[BaseException] = []
    world.rt.stop = stopped.append
    await group(world, "u1")
    client.gate = asyncio.Event()
    await burst(world, "u1", 2)  # E0 on the chain, E1 spilled
    client.gate.set()
    await world.settle()  # E0 delivered; E1 handed to the chain, waiting
    assert world.client.events() == ["E0"] and world.rt.acks.in_flight == 0
    world.rt.spills.stop()
    client.hold.set()  # the clients close: E1 fails
    await world.settle()
    assert stopped == [] and world.rt.failure is None
    assert queue(world, "u1").size == 1  # the next worker sends it


async def test_a_held_call_released_while_spilled_ones_wait_goes_after_them():
    world = World({"CS_RELAY_USER_SHARE": "1"}, tables=tables())
    await group(world, "u1")
    world.client.gate = asyncio.Event()
    await burst(world, "u1", 3)  # E0 on the chain, E1 and E2 spilled
    # A call naming a group nobody has introduced yet: held for ClientSuccess ...
    await world.publish(type="track", userId="u1", event="Held", context={"groupId": "g2"}, messageId="h")
    assert [i["raw"] for i in world.pending("u1")["held"]] and queue(world, "u1").size == 2
    # ... until the group's call comes: released, behind the spilled ones.
    await world.publish(type="group", userId="u2", groupId="g2", traits={"name": "Beta"}, messageId="u2-g")
    assert queue(world, "u1").size == 3
    world.client.gate.set()
    await until(lambda: queue(world, "u1").size == 0 and world.rt.rows.pending("u1").is_empty(), world)
    assert world.client.events() == ["E0", "E1", "E2", "Held"]
    assert world.dead_letters() == []


def test_a_partition_not_scanned_yet_keeps_nothing_in_memory_for_users_without_spilled_deliveries():
    """Until the rescan after an assignment has read a partition, every delivery of its
    users asks the table for a spill queue; the empty ones must not stay in memory (a
    million users' first calls, read while the scan runs, kept an entry each)."""
    store = SpillStore({}, {}, lambda user: 0)
    store.assigned([0])  # owned, not scanned yet: the table is asked
    for u in range(1_000):
        assert store.queue((f"u{u}", CS)).size == 0
    assert (store.tails, store.cursor, store.known) == ({}, {}, set())
    store.index[spill.order_key("u1", CS, 0)] = 7  # one that did spill is found, and its tail kept
    assert store.queue(("u1", CS)) == spill.SpillQueue(0, 1) and store.tails == {("u1", CS): 1}


class HeldClient(FakeClient):
    """A partner that answers the requests of `users` only as `release[user]` lets them
    through (everybody else's at once); `asked` names every request, answered or not."""

    def __init__(self, *users: str) -> None:
        super().__init__()
        self.release = {user: asyncio.Semaphore(0) for user in users}
        self.asked: list[str] = []

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        self.asked.append(request.path.rsplit("/", 1)[-1])
        user = request.json.get("identity", {}).get("user", {}).get("id")
        if user in self.release:
            await self.release[user].acquire()
        return await super().send(request, **kwargs)


async def turns_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Turns of the loop until `condition` (no routing of what was produced: the
    world's caught-up records stay unread)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0)


async def test_a_spilled_queue_with_nothing_of_its_user_ahead_drains_before_its_partition_catches_up():
    """After a take-over, a spilled queue waits for the calls of its user read again
    (they go first), not for the whole partition: u1's events were all committed, so
    nothing of u1's is ahead and its queue drains while the partition is still behind;
    u2's calls are read again (no park record among them), so its queue waits, and its
    calls keep their order."""
    probe = World()
    u1, u2 = [u for u in (f"u{i}" for i in range(1000)) if probe.rt.partition_of(u) == probe.rt.partition_of("u1")][:2]
    client = HeldClient(u1, u2)
    first = World({"CS_RELAY_USER_SHARE": "1"}, client=client, tables=tables())
    partition = first.rt.partition_of(u1)
    await group(first, u1)
    await group(first, u2)
    for i in range(3):
        await first.publish(type="track", userId=u1, event=f"A{i}", messageId=f"a{i}")
    client.release[u1].release()  # A0 answered: u1's events acknowledged, A1 on its way
    await until(lambda: first.rt.acks.in_flight == 0, first)
    for i in range(3):
        await first.publish(type="track", userId=u2, event=f"B{i}", messageId=f"b{i}")
    assert queue(first, u1).size == 2 and queue(first, u2).size == 2  # A1 (on its way), A2; B1, B2
    assert client.asked == ["A0", "A1", "B0"]
    assert await first.rt.sending.senders.cancel(lambda key: True, 1.0)  # the worker stops
    u2_calls = [r for r in first.taken if f'"userId": "{u2}"'.encode() in r.value and b'"track"' in r.value]
    committed = max(o for t, p, o in first.acked if (t, p) == (BY_USER_TOPIC, partition))
    assert committed == max(r.offset for r in first.taken if r.key == u1.encode())  # every call of u1's
    assert len(u2_calls) == 3 and min(r.offset for r in u2_calls) > committed  # none of u2's

    # The next worker: the partition from the committed offset holds u2's calls (and
    # nothing of u1's); its read-ahead reads them up to its caught-up record.
    second = World({"CS_RELAY_USER_SHARE": "1"}, tables=first.tables)
    second.offsets = first.offsets.copy()
    second.outbox.records = [
        r for r in first.outbox.records if r.to == BY_USER and r.key == u2.encode() and r.kind is None
    ]
    second.routed = len(second.outbox.records)  # in Kafka, not fetched yet
    second.rt.assigned(set(range(PARTITIONS)))
    await turns_until(lambda: second.rt.parking.catchup.cleared(partition, u1, CS))  # read ahead to the token
    await spilling.tick(second.rt)  # finds both queues
    await turns_until(lambda: len(second.client.events()) >= 2)  # u1's queue drains
    assert second.rt.parking.catchup.behind(partition)  # its caught-up record not read yet
    assert (u2, CS) in second.rt.spills.waiting  # u2's waits for its calls read again
    assert second.client.events() == ["A1", "A2"]

    for record in u2_calls:  # the reading loop reaches them, then the caught-up record
        second.route(record)
    started = time.monotonic()
    while queue(second, u2).size or second.rt.acks.in_flight:
        assert time.monotonic() - started < 5, "timed out"
        await spilling.tick(second.rt)
        await second.settle(spins=5)
    assert second.client.events() == ["A1", "A2", "B0", "B1", "B2"]
    assert second.tables.spillrows == {}


async def test_with_keyed_input_a_spilled_queue_waits_for_the_older_calls_read_again_from_the_input_topic():
    """CS_RELAY_INPUT_KEYED_BY_USER: calls are read again from the input topic, not the
    by-user one, so the by-user partition catching up says nothing of them. u1's A0 was
    on its way (unanswered, so not acknowledged) when the worker stopped; A1 and A2 had
    spilled. The next worker's by-user partition catches up at once, yet its spilled
    queue must wait until the input partition is read again past A2: A0 goes first."""
    keyed = {"CS_RELAY_USER_SHARE": "1", "CS_RELAY_INPUT_KEYED_BY_USER": "true"}
    client = HeldClient("u1")
    first = World(keyed, client=client, tables=tables())
    await first.publish_keyed(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="u1-g")
    calls = [await first.publish_keyed(type="track", userId="u1", event=f"A{i}", messageId=f"a{i}") for i in range(3)]
    assert queue(first, "u1").size == 2 and client.asked == ["A0"]  # A1, A2 spilled
    assert await first.rt.sending.senders.cancel(lambda key: True, 1.0)  # the worker stops
    assert all(o < calls[0].offset for t, _p, o in first.acked if t == calls[0].topic)  # A0 not acknowledged

    second = World(keyed, tables=first.tables)
    second.offsets = first.offsets.copy()
    second.acked.extend(first.acked)  # what was committed
    second.rt.assigned(set(range(PARTITIONS)))
    await second.settle()  # its caught-up records read back: the by-user partitions caught up
    assert not second.rt.parking.catchup.behind(calls[0].partition)
    for _ in range(3):
        await spilling.tick(second.rt)  # the timer: finds the spilled queue
        await second.settle()
    for record in calls:  # the input partition read again from the committed offset
        await second.intake(record, keyed=True)
    started = time.monotonic()
    while queue(second, "u1").size or second.rt.acks.in_flight:
        assert time.monotonic() - started < 5, "timed out"
        await spilling.tick(second.rt)
        await second.settle(spins=5)
    assert second.client.events() == ["A0", "A1", "A2"]
    assert second.tables.spillrows == {}
