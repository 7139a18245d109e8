"""Micro-batches in the agents (streams.runtime.intake): what the stream has buffered
is handled as one batch, and each event is still acknowledged on its own, in offset
order per partition, once its work is done and Kafka has its batch's changelog writes;
a rebalance while a batch waits leaves its events alone; a failing event is
dead-lettered and the rest of its batch goes on."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import faust
import pytest
from faust.streams import _current_event

from streams.core.decision import PartnerRequest
from streams.runtime import intake, routing
from streams.runtime.delivery import Result
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, INPUT, FakeClient, World
from tests.test_runtime_unacked_bytes import Event, Message  # a Faust event and message, as the agents read them


class App:
    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.flow_control = self

    def is_active(self) -> bool:
        return True


class Queue:
    def __init__(self) -> None:
        self._queue: deque[Event] = deque()


class Stream:
    """What `intake.batches` reads of a Faust stream: `noack().events()` and the
    buffer behind it (the channel's queue). The events come in bursts: a burst is in
    the buffer at once. As Faust's, the stream skips an event fetched before a
    rebalance (another generation) and waits for the next: after the last burst, for
    ever, as on an idle partition; and the event it hands out becomes Faust's current
    event (`faust.current_event()`, which Faust's tables read)."""

    def __init__(self, app: App, *bursts: list[Event]) -> None:
        self._bursts = bursts
        self.app = app
        self.queue = Queue()
        self.channel = self
        self.done = asyncio.Event()  # set once every burst is taken

    def noack(self) -> Stream:
        return self

    def empty(self) -> bool:  # the channel's
        return not self.queue._queue

    async def events(self) -> AsyncIterator[Event]:
        for burst in self._bursts:
            self.queue._queue.extend(burst)
            while self.queue._queue:
                event = self.queue._queue.popleft()
                if event.message.generation_id == self.app.consumer_generation_id:
                    _current_event.set(weakref.ref(event))  # as Faust's Stream._py_aiter does
                    yield event
        self.done.set()
        await asyncio.Event().wait()


@pytest.fixture
async def reading() -> AsyncIterator[Callable[..., Any]]:
    """`reading(agent, world, *bursts, app=...)`: the agent (intake.route or
    intake.intake) reading `bursts`, until the test ends."""
    readers: list[asyncio.Future[None]] = []

    def start(agent: Any, world: World, *bursts: list[Event], app: App | None = None) -> None:
        app = app or App()
        # The bursts number their offsets from 0, apart from the records the world routed
        # before (`World.route`, its own offsets): the stream starts as on a new assignment.
        world.rt.acks.redeliveries.handled_to.clear()
        readers.append(asyncio.ensure_future(agent(world.rt, app, Stream(app, *bursts))))

    yield start
    for reader in readers:
        reader.cancel()


class SlowClient(FakeClient):
    """ClientSuccess, whose requests for an event named "Slow..." wait for `slow`."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = asyncio.Event()

    async def send(self, request: PartnerRequest, **kwargs: Any) -> Result:
        if request.path.rsplit("/", 1)[-1].startswith("Slow"):
            await self.slow.wait()
        return await super().send(request, **kwargs)


class Changelog(dict):
    """A table whose writes go to a changelog that Kafka acknowledges when told."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[asyncio.Future[Any]] = []

    def send_changelog(self, *args: Any) -> asyncio.Future[Any]:
        self.sent.append(asyncio.get_running_loop().create_future())
        return self.sent[-1]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.send_changelog(key, value)

    def acknowledge(self) -> None:
        for written in self.sent:
            if not written.done():
                written.set_result(None)


class PartitionedRows(dict):
    """A Faust table's rows as its RocksDB store keeps them: one database per partition,
    the partition of a read or a write (and of its changelog record) being that of
    Faust's current event (`Store._get`, `Store._set`, `Table.partition_for_key`);
    without one, a read looks in every partition (`Store._get_bucket_for_key`) and a
    write (only the world's own routing makes one) goes to the row's user's partition."""

    def __init__(self, partition_of: Callable[[str], int]) -> None:
        super().__init__()
        self.partition_of = partition_of
        self.stores: dict[int, dict[str, Any]] = {}

    def owner(self, key: str) -> int:
        """The partition of the row's user (a payload row's key names its user first)."""
        return self.partition_of(json.loads(key)[0] if key.startswith("[") else key)

    def _partition(self, key: str) -> int | None:
        event = faust.current_event()
        return None if event is None else event.message.partition

    def get(self, key: str, default: Any = None) -> Any:
        partition = self._partition(key)
        stores = self.stores.values() if partition is None else [self.stores.get(partition, {})]
        return next((rows[key] for rows in stores if key in rows), default)

    def __setitem__(self, key: str, value: Any) -> None:
        partition = self._partition(key)
        self.stores.setdefault(self.owner(key) if partition is None else partition, {})[key] = value

    def __delitem__(self, key: str) -> None:
        partition = self._partition(key)
        del self.stores[self.owner(key) if partition is None else partition][key]

    def misplaced(self) -> list[tuple[str, int]]:
        """(key, partition) of every row in another partition than its user's."""
        return [(k, p) for p, rows in self.stores.items() for k in rows if self.owner(k) != p]


def users_in(world: World, partition: int, count: int) -> list[str]:
    found = [f"u{n}" for n in range(200) if world.rt.partition_of(f"u{n}") == partition]
    return found[:count]


async def grouped(world: World, *users: str) -> None:
    for user in users:
        await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"g-{user}")


def call(user: str, offset: int, partition: int, **body: Any) -> Event:
    value = json.dumps({"userId": user, "messageId": f"{user}-{offset}", **body}).encode()
    return Event(user.encode(), value, Message(BY_USER_TOPIC, partition, offset))


def track(user: str, name: str, offset: int, partition: int, message_id: str | None = None) -> Event:
    body = {"type": "track", "userId": user, "event": name, "messageId": message_id or f"{user}-{name}"}
    return Event(user.encode(), json.dumps(body).encode(), Message(BY_USER_TOPIC, partition, offset))


async def until(condition: Any, seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), seconds)


async def test_what_the_stream_has_buffered_is_one_batch_and_each_event_is_acknowledged_in_order(reading):
    world = World()
    a, b = users_in(world, 1, 2)
    await grouped(world, a, b)
    events = [track(u, f"E{n}", n, 1) for n, u in enumerate([a, b, a, b, a])]
    reading(intake.route, world, events)
    await until(lambda: world.rt.acks.in_flight == 0)
    assert world.rt.counters["batches"] == 1
    assert [e.acked for e in events] == [[n] for n in range(5)]
    assert sorted(world.client.events()[-5:]) == [f"E{n}" for n in range(5)]


async def test_each_event_of_a_batch_over_two_partitions_reads_and_writes_its_own_partitions_rows(reading):
    # Faust's tables read and write the partition of Faust's current event; once the
    # stream has handed out the batch, that is its last event's. Seen with batches of
    # more than one event (streams.runtime.faust_drain installed): tests/test_faults_rebalance.py
    # found taken-over users' waiting events without their payload rows, and scenario b
    # held every track (the users' group calls written to another partition's rows).
    partition_of = World().rt.partition_of
    users, pending = PartitionedRows(partition_of), PartitionedRows(partition_of)
    world = World(tables=Tables(users=users, pending=pending, groups={}, seen={}))
    (a,), (b,) = users_in(world, 1, 1), users_in(world, 2, 1)
    await grouped(world, b)
    group_call = call(a, 0, 1, type="group", groupId="g1", traits={"name": "Acme"})
    first = [group_call, call(b, 0, 2, type="track", event="B0")]  # one batch over partitions 1 and 2
    then = [call(a, 1, 1, type="track", event="A1")]  # a's next, in a batch of its own
    reading(intake.route, world, first, then)
    await until(lambda: world.rt.acks.in_flight == 0 and then[0].acked == [1])
    assert users.misplaced() == [] and pending.misplaced() == []
    assert world.rt.counters["held.clientsuccess"] == 0
    assert "A1" in world.client.events()
    assert (world.rt.rows.user(a) or pytest.fail("no user row")).group_id == "g1"


async def test_an_event_held_in_a_batch_over_two_partitions_is_released_from_its_own_partitions_rows(reading):
    # ClientSuccess holds a user's track until the user's group is known; the held event
    # waits in the user's pending index row and a payload row of its own.
    partition_of = World().rt.partition_of
    pending, payloads = PartitionedRows(partition_of), PartitionedRows(partition_of)
    world = World(tables=Tables(users={}, pending=pending, groups={}, seen={}, payloads=payloads))
    (a,), (b,) = users_in(world, 1, 1), users_in(world, 2, 1)
    await grouped(world, b)
    held = track(a, "A0", 0, 1)
    group_call = call(a, 1, 1, type="group", groupId="g1", traits={"name": "Acme"})
    reading(intake.route, world, [held, track(b, "B0", 0, 2)], [group_call])
    await until(lambda: world.rt.acks.in_flight == 0 and group_call.acked == [1])
    assert world.rt.counters["held.clientsuccess"] == 1
    await world.settle()  # the group's records, routed as the by-user topic would
    assert "A0" in world.client.events()  # released, from a's rows
    assert world.rt.rows.pendings.missing == 0
    assert pending.misplaced() == [] and payloads.misplaced() == []


async def test_a_batch_is_at_most_max_batch_events(monkeypatch, reading):
    monkeypatch.setattr(intake, "MAX_BATCH", 2)
    world = World()
    (a,) = users_in(world, 0, 1)
    await grouped(world, a)
    events = [track(a, f"E{n}", n, 0) for n in range(5)]
    reading(intake.route, world, events)
    await until(lambda: world.rt.acks.in_flight == 0)
    assert world.rt.counters["batches"] == 3
    assert world.client.events()[-5:] == [f"E{n}" for n in range(5)]  # one user: in order


async def test_a_later_event_that_finishes_first_waits_for_the_earlier_and_another_partition_does_not(reading):
    world = World(client=SlowClient())
    slow_user, quick_user = users_in(world, 1, 2)
    (other,) = users_in(world, 2, 1)
    await grouped(world, slow_user, quick_user, other)
    events = [track(slow_user, "Slow", 0, 1), track(quick_user, "Quick", 1, 1), track(other, "Other", 0, 2)]
    reading(intake.route, world, events)
    await until(lambda: events[2].acked == [0])  # the other partition's event: on its own
    assert (
        world.rt.counters["batches"] == 1
    )  # one batch, over two partitions  # the other partition's event: on its own
    await until(lambda: "Quick" in world.client.events())
    await asyncio.sleep(0.02)
    assert events[0].acked == [] and events[1].acked == []  # delivered, but behind the slow one
    world.client.slow.set()  # type: ignore[attr-defined]
    await until(lambda: world.rt.acks.in_flight == 0)
    assert events[0].acked == [0] and events[1].acked == [1]


async def test_an_event_waits_for_every_changelog_write_of_its_batch(reading):
    users = Changelog()
    world = World(tables=Tables(users=users, pending={}, groups={}, seen={}))
    world.rt.changelog.watch(users)
    a, b = users_in(world, 3, 2)
    await grouped(world, a, b)
    users.acknowledge()
    await world.settle()
    written_before = len(users.sent)
    # a's track writes no user row; b's first identify does: a waits for it all the same.
    ident = json.dumps({"type": "identify", "userId": b, "traits": {"plan": "pro"}, "messageId": "i"}).encode()
    events = [track(a, "E", 0, 3), Event(b.encode(), ident, Message(BY_USER_TOPIC, 3, 1))]
    reading(intake.route, world, events)
    await until(lambda: "E" in world.client.events())
    assert len(users.sent) > written_before  # b's row, on its way to Kafka
    await asyncio.sleep(0.02)
    assert events[0].acked == [] and events[1].acked == []
    users.acknowledge()
    await until(lambda: world.rt.acks.in_flight == 0)
    assert events[0].acked == [0] and events[1].acked == [1]


async def test_a_batch_waiting_while_a_rebalance_begins_is_left_alone(reading):
    world = World({"CS_RELAY_MAX_UNACKED_BYTES": str(64 * 1024)}, client=SlowClient())
    a, b = users_in(world, 0, 2)
    await grouped(world, a, b)
    big = track(a, "Slow", 0, 0)
    body = json.loads(big.value)
    # Past the byte bound (`held_bytes`: twice the value), under the message size limit (32 KB):
    # delivered, its request held until `slow` is set.
    big.value = json.dumps({**body, "properties": {"blob": "x" * 32_000}}).encode()
    later = [track(b, f"E{n}", n + 1, 0) for n in range(3)]
    app = App()
    reading(intake.route, world, [big], later, app=app)
    await until(world.rt.acks.pressed.is_set)  # the second batch taken, waiting for room
    app.consumer_generation_id = 2  # a rebalance: those events may no longer be ours
    world.client.slow.set()  # type: ignore[attr-defined]
    await until(lambda: world.rt.counters["left_after_rebalance"] == 3)
    await until(lambda: world.rt.acks.in_flight == 0)
    assert big.acked == [0] and world.dead_letters() == []  # delivered once released
    assert [e.acked for e in later] == [[], [], []]  # not handled, not acknowledged
    assert not any(name.startswith("E") for name in world.client.events())
    assert world.rt.counters["left_after_rebalance"] == 3


async def test_a_failing_event_goes_to_the_dead_letters_and_the_rest_of_its_batch_goes_on(monkeypatch, reading):
    world = World()
    (a,) = users_in(world, 2, 1)
    await grouped(world, a)
    route_call = routing.route_call

    def buggy(rt: Any, record: Any, msg: Any = None) -> Any:
        if b"Bad" in record.value:
            raise RuntimeError("a bug")
        return route_call(rt, record, msg)

    monkeypatch.setattr(routing, "route_call", buggy)
    events = [track(a, name, n, 2) for n, name in enumerate(["E0", "Bad", "E2"])]
    reading(intake.route, world, events)
    await until(lambda: world.rt.acks.in_flight == 0)
    assert world.client.events()[-2:] == ["E0", "E2"]
    assert [d.reason for d in world.dead_letters()] == ["routing_error"]
    assert [e.acked for e in events] == [[0], [1], [2]]


async def test_an_event_fetched_before_a_rebalance_at_the_head_of_the_buffer_ends_the_batch(reading):
    # The stream would skip it and wait for the next record, holding the batch unhandled
    # (seen in tests/test_faults_rebalance.py: an idle partition's catch-up record waited).
    world = World()
    (a,) = users_in(world, 1, 1)
    await grouped(world, a)
    first, stale = track(a, "E0", 0, 1), track(a, "E1", 1, 1)
    stale.message.generation_id = 0
    reading(intake.route, world, [first, stale])
    await until(lambda: first.acked == [0])
    assert "E0" in world.client.events() and "E1" not in world.client.events()


class GatedOutbox:
    """The world's outbox, whose by-user sends (a re-keyed record) wait for `gate`."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gate = inner, asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, to: str, **kwargs: Any) -> Any:
        if to == BY_USER:
            self.waiting.set()
            await self.gate.wait()
        return await self.inner.send(to, **kwargs)

    async def by_user(self, **record: Any) -> Any:
        return await self.send(BY_USER, **record)


async def test_a_keyed_batch_rechecks_for_a_rebalance_after_handing_a_re_keyed_record_over(reading):
    world = World({"CS_RELAY_INPUT_KEYED_BY_USER": "true"})
    here, elsewhere = users_in(world, 1, 1)[0], users_in(world, 2, 1)[0]
    await grouped(world, here, elsewhere)
    outbox = GatedOutbox(world.outbox)
    world.rt.outbox = outbox  # type: ignore[assignment]

    def call(user: str, name: str, offset: int) -> Event:
        body = {"type": "track", "userId": user, "event": name, "messageId": name}
        return Event(user.encode(), json.dumps(body).encode(), Message(INPUT, 1, offset))

    first, moved, last = call(here, "A", 0), call(elsewhere, "B", 1), call(here, "C", 2)
    app = App()
    reading(intake.intake, world, [first, moved, last], app=app)
    await asyncio.wait_for(outbox.waiting.wait(), 5.0)  # B handed to the producer, A routed already
    app.consumer_generation_id = 2
    outbox.gate.set()
    await until(lambda: world.rt.counters["left_after_rebalance"] == 1)  # C: taken before the wait, left after it
    assert world.rt.counters["rekeyed"] == 1
    await until(lambda: "A" in world.client.events())
    assert "C" not in world.client.events()
    assert last.acked == []


async def test_a_batch_calls_into_the_acks_once_to_register_and_not_to_wait_while_there_is_room(reading):
    # The acks door, entered once per batch: `close_batch` registers the batch and marks
    # it read to; the redelivery guard is a read of `handled_to` and the changelog scope
    # an attribute set; no wait (`room`) while the window is not full
    # (bench/trackpath.py counts these entries).
    world = World()
    a, b = users_in(world, 1, 2)
    await grouped(world, a, b)
    calls: list[str] = []
    acks = world.rt.acks
    for name in ("close_batch", "room", "wait_below", "add", "add_batch"):
        method = getattr(acks, name)
        setattr(acks, name, lambda *args, _m=method, _n=name, **kw: (calls.append(_n), _m(*args, **kw))[1])
    events = [track(u, f"E{n}", n, 1) for n, u in enumerate([a, b, a])]
    reading(intake.route, world, events)
    await until(lambda: world.rt.acks.in_flight == 0 and events[-1].acked == [2])
    assert world.rt.counters["batches"] == 1
    assert calls == ["close_batch", "add_batch"]  # add_batch from within the acks: one call in from the intake
    assert acks.redeliveries.read_to((BY_USER_TOPIC, 1)) == 3  # read to past the batch


async def test_an_intake_batch_is_registered_in_one_call_and_what_was_handed_over_even_if_the_agent_stops(reading):
    world = World()
    gate = asyncio.Event()
    sent: list[bytes] = []
    send = world.rt.outbox.send

    async def slow_second(to: str, **record: Any) -> Any:
        sent.append(record["value"])
        if len(sent) == 2:
            await gate.wait()  # the producer takes the second record only when told
        return await send(to, **record)

    world.rt.outbox.send = slow_second  # type: ignore[method-assign]
    added: list[int] = []
    add_batch = world.rt.acks.add_batch
    world.rt.acks.add_batch = lambda events, shared=None: (added.append(len(events)), add_batch(events, shared))[1]  # type: ignore[method-assign]
    events = [
        Event(
            b"u1",
            json.dumps({"type": "track", "userId": "u1", "event": f"E{n}", "messageId": f"m{n}"}).encode(),
            Message(INPUT, 0, n),
        )
        for n in range(3)
    ]
    app = App()
    reader = asyncio.ensure_future(intake.intake(world.rt, app, Stream(app, events)))  # type: ignore[arg-type]
    await until(lambda: len(sent) == 2)
    assert added == []  # the batch is registered once, when it is handed over
    reader.cancel()  # the worker stops while the second record waits for the producer
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert added == [1]  # the first, handed over, is registered all the same
    await until(lambda: events[0].acked == [0])
    assert events[1].acked == [] and events[2].acked == []
