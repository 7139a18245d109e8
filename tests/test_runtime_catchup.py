"""The catch-up after an assignment (streams.runtime.catchup) with a backlog longer than
the unacknowledged window: the reading loops wait for acknowledgements, so the
caught-up record is not read before the backlog's deliveries start. Only the users with
an earlier owner's park record ahead in the partition wait (park at once) then; every
other delivery goes (the reader of the world reads its log as Kafka would hand it)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, Sequence

from streams.core import control
from streams.core.control import CaughtUp, Park
from streams.core.pending import Parked
from streams.runtime import scanahead
from streams.runtime.catchup import CatchUp
from streams.runtime.scanahead import PAIR_BYTES, Reader, Scanned
from tests.runtime_world import PARTITIONS, FakeClient, World
from tests.test_runtime_crash import enqueue, left_in_log, take


async def press(world: World) -> asyncio.Future:
    """The reading loops at the window: an event that never finishes, and a loop waiting
    below it. Resolve the returned future to let it go."""
    never = asyncio.get_running_loop().create_future()
    world.rt.acks.add(("elsewhere", 0), lambda: None, [never])
    asyncio.ensure_future(world.rt.acks.wait_below(1))
    for _ in range(10):
        await asyncio.sleep(0)
    assert world.rt.acks.pressed.is_set()
    return never


def same_partition(world: World, key: str) -> str:
    """Another user whose by-user partition is `key`'s."""
    return next(u for u in (f"other{i}" for i in range(1000)) if world.rt.partition_of(u) == world.rt.partition_of(key))


async def test_a_backlog_past_the_window_without_park_records_is_delivered_at_once():
    """The cliff of issue 23 (profiled scenario b: 9,000-11,000 of 40,000 deliveries
    parked): nothing an earlier owner left in the partition concerns these users, so
    nothing waits for the caught-up record."""
    world = World()
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await enqueue(world, type="track", userId="u1", event="First", messageId="t1")
    world.rt.assigned(set(range(PARTITIONS)))  # a caught-up record behind the backlog in each partition
    hold = await press(world)

    await asyncio.wait_for(world.route(take(world)), 5.0)

    assert world.client.events() == ["First"]
    assert not [k for k in world.rt.counters if k.startswith("parked")], world.rt.counters
    assert world.rt.parking.catchup.behind(world.rt.partition_of("u1"))  # its record not read yet
    hold.set_result(None)


async def test_only_the_user_with_an_earlier_owner_s_park_record_ahead_waits_behind_it():
    """Issue 22, finding 3, under back-pressure: u1's E1 parked (P1 in Kafka, later than
    E2, E1 committed) and the worker died. The next owner, its reading at the window,
    delivers u2's call (same partition) at once, parks E2 behind E1 rather than send it
    first, and in the end u1's partner gets E1 then E2, once each."""
    old = World(client=FakeClient())
    u2 = same_partition(old, "u1")
    for user in ("u1", u2):
        await old.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"g-{user}")
    await enqueue(old, type="track", userId="u1", event="First", messageId="t1")
    await enqueue(old, type="track", userId="u1", event="Second", messageId="t2")
    old.client.answers = [503]
    await old.route(take(old))  # E1 parked: P1 produced, E1 done
    backlog = left_in_log(old)  # E2, P1

    new = World(client=FakeClient(), tables=old.tables)
    new.now = old.now
    new.offsets = Counter(old.offsets)  # the log goes on where it was
    await enqueue(new, type="track", userId=u2, event="Other", messageId="o1")
    new.outbox.records += backlog  # the partition from the committed offset: u2's call, E2, P1
    new.rt.assigned(set(range(PARTITIONS)))
    hold = await press(new)

    await asyncio.wait_for(new.route(take(new)), 5.0)
    assert new.client.events() == ["Other"]  # went at once: nothing of u2's lies ahead
    await asyncio.wait_for(new.route(take(new)), 5.0)
    assert new.client.events() == ["Other"]  # E2 not sent before E1
    assert new.rt.counters["parked_catching_up.clientsuccess"] == 1, new.rt.counters

    hold.set_result(None)
    assert await new.settle()
    await new.drain_retries()
    assert old.client.events() == ["First"]
    assert new.client.events() == ["Other", "First", "Second"]
    assert new.dead_letters() == [] and new.tables.pending.get("u1") is None


async def test_a_scan_that_cannot_read_ahead_falls_back_to_waiting_for_the_caught_up_record():
    """The partition cannot be read ahead (Kafka refuses, or the token is never found in
    time): the deliveries of every user do as before the scan, and park under pressure."""

    async def refused(partitions: set[int]) -> AsyncGenerator[Sequence[Scanned], None]:
        raise ConnectionError("no broker")
        yield []  # an async generator

    world = World()
    world.rt.parking.catchup.reader = refused
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await enqueue(world, type="track", userId="u1", event="First", messageId="t1")
    world.rt.assigned(set(range(PARTITIONS)))
    hold = await press(world)

    await asyncio.wait_for(world.route(take(world)), 5.0)

    assert world.client.events() == []
    assert world.rt.counters["parked_catching_up.clientsuccess"] == 1
    hold.set_result(None)
    assert await world.settle()
    await world.drain_retries()
    assert world.client.events() == ["First"]


# ---------------------------------------------------------------- the scan's bounds


def listed(batches: list[list[Scanned]], then_wait: bool = True) -> Reader:
    """A reader that hands out `batches`, then waits (for more, as Kafka's does)."""

    async def read(partitions: set[int]) -> AsyncGenerator[Sequence[Scanned], None]:
        for batch in batches:
            yield batch
        if then_wait:
            await asyncio.Event().wait()  # only cancellation (the scan closed) ends it

    return read


def parked(partition: int, user: str, destination: str = "cs") -> Scanned:
    value, headers = control.encode(Park(destination, None, Parked(0, "{}", {}, {}, "m", 1.0, 1, 2.0), 1))
    return (partition, user.encode(), headers, value)


def token(partition: int, text: str) -> Scanned:
    value, headers = control.encode(CaughtUp(text))
    return (partition, b"", headers, value)


async def clears(catchup: CatchUp, partition: int, user: str) -> bool:
    """Whether the delivery goes, the reading loops at the window (no waiting for the token)."""
    pressed = asyncio.Event()
    pressed.set()
    return await asyncio.wait_for(catchup.clear(partition, user, "cs", 10.0, give_up=pressed), 5.0)


async def test_past_its_byte_bound_the_scan_leaves_a_partition_to_its_token():
    """Many users with park records ahead: the pairs are kept up to max_bytes over all
    partitions; the partition that would pass it is left to the caught-up record (all its
    deliveries wait, as without the scan), the others keep theirs."""
    catchup = CatchUp("w1", max_bytes=3 * (PAIR_BYTES + 2))
    tokens = catchup.begin({0, 1})
    batch = [parked(1, "b1"), token(1, tokens[1])]
    batch += [parked(0, "a1"), parked(0, "a2"), parked(0, "a3"), token(0, tokens[0])]
    catchup.scan_ahead(tokens, listed([batch]))
    assert not await clears(catchup, 0, "zz")  # partition 0 gave up at a3: nobody of it is cleared
    assert await clears(catchup, 1, "zz") and not await clears(catchup, 1, "b1")
    assert catchup.scans.bytes == PAIR_BYTES + 2  # only b1's pair is kept


def call(partition: int, user: str) -> Scanned:
    return (partition, user.encode(), {}, b'{"type": "track", "event": "E"}')


async def test_the_scan_notes_each_user_with_a_record_ahead_up_to_its_byte_bound():
    """A user's spilled deliveries go before the token is read unless a record of the
    user's lies ahead (a call read again goes first: streams.runtime.spilling). The users
    are kept up to max_bytes over all partitions, apart from the pairs; past it, every
    user of the partition waits for the token, and its pairs still clear deliveries."""
    catchup = CatchUp("w1", max_bytes=2 * (PAIR_BYTES + 2))
    tokens = catchup.begin({0, 1})
    batch = [call(1, "b1"), token(1, tokens[1])]
    batch += [call(0, "a1"), parked(0, "a2"), call(0, "a3"), token(0, tokens[0])]
    catchup.scan_ahead(tokens, listed([batch]))
    assert await clears(catchup, 1, "b1")  # a call ahead is no park: its deliveries go
    assert catchup.nothing_ahead(1, "zz") and not catchup.nothing_ahead(1, "b1")
    assert not catchup.nothing_ahead(0, "zz")  # partition 0 passed the bound at a2
    assert await clears(catchup, 0, "zz") and not await clears(catchup, 0, "a2")
    assert catchup.scans.user_bytes == PAIR_BYTES + 2  # only b1 is kept
    assert catchup.reached(0, tokens[0])
    assert catchup.nothing_ahead(0, "a1") and catchup.nothing_ahead(0, "a2")


async def test_a_scan_that_does_not_reach_the_token_in_time_leaves_the_partition_to_it(monkeypatch):
    monkeypatch.setattr(scanahead, "SCAN_SECONDS", 0.05)
    catchup = CatchUp("w1")
    tokens = catchup.begin({0})
    catchup.scan_ahead(tokens, listed([[parked(0, "a1"), token(0, "w1/0/0")]]))  # an earlier round's token
    assert not await clears(catchup, 0, "zz")
    await catchup.close()


async def test_a_new_assignment_or_a_revocation_ends_what_the_scan_waited_for():
    catchup = CatchUp("w1")
    first = catchup.begin({0, 1})
    catchup.scan_ahead(first, listed([[parked(0, "a1")]]))
    waiting = asyncio.ensure_future(catchup.clear(1, "zz", "cs", 10.0))
    await asyncio.sleep(0)
    catchup.forget([1])  # revoked: the delivery's work is cancelled, nothing of it waits
    assert await asyncio.wait_for(waiting, 5.0)
    again = catchup.begin({0})
    assert again[0] != first[0]
    catchup.scan_ahead(again, listed([[parked(0, "a1"), token(0, first[0]), token(0, again[0])]]))
    assert await clears(catchup, 0, "zz") and not await clears(catchup, 0, "a1")
    await catchup.close()
