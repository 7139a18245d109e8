"""One destination's trouble stays its own (issue 16, item 5), through the real runtime
without a broker (tests/runtime_world.py): a delivery holds its event's acknowledgement
for a bounded time, then parks; a destination answering 5xx or 429 broadly is backed off
as a whole by its circuit breaker; one answering 401 to everything is paused, not
dead-lettered; a recovered destination's parked deliveries drain several per retry."""

from __future__ import annotations

import asyncio
import time

from streams.core.breaker import State
from streams.runtime import retries
from tests.runtime_world import FakeClient, World


async def groups(world: World, *users: str) -> None:
    for user in users:
        await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")


async def track(world: World, user: str, n: int) -> None:
    await world.publish(type="track", userId=user, event=f"E{n}", messageId=f"{user}-t{n}")


async def test_a_delivery_without_an_answer_parks_after_the_deadline_and_its_event_is_acknowledged():
    world = World({"CS_RELAY_DELIVERY_DEADLINE": "0.2"})
    await groups(world, "u1")
    world.client.gate = asyncio.Event()  # the partner never answers
    acked = len(world.acked)
    started = time.monotonic()
    await world.publish(type="track", userId="u1", event="Slow", messageId="t1")
    while not world.controls(b"park") and time.monotonic() - started < 5:
        await asyncio.sleep(0.05)
    assert await world.settle()
    assert time.monotonic() - started < 3
    assert [p["message_id"] for p in world.pending("u1")["parked"]] == ["t1"]
    assert len(world.acked) == acked + 3  # the input record, its by-user record, the park record
    assert world.rt.acks.in_flight == 0
    assert world.dead_letters() == []


async def test_an_open_breaker_parks_deliveries_without_calling_the_partner_then_a_probe_drains_them():
    world = World({"CS_RELAY_BREAKER_FAILURES": "3", "CS_RELAY_BREAKER_OPEN_SECONDS": "5"})
    users = [f"u{i}" for i in range(6)]
    await groups(world, *users)
    world.client.answers = [503] * 3  # one answer per delivery from the fake client
    for user in users[:3]:
        await track(world, user, 1)
    breaker = world.rt.sending.breakers["clientsuccess"]
    assert breaker.state is State.OPEN
    called = len(world.client.requests)
    for user in users[3:]:
        await track(world, user, 1)
    assert len(world.client.requests) == called  # parked at once, the partner not asked
    assert sorted(k.decode() for k in {r.key for r in world.controls(b"park")}) == users
    assert world.rt.counters["held_back.clientsuccess"] == 3

    # Due but the breaker still open: nobody is retried.
    world.now += 4
    for user in users:
        world.rt.parking.marks.retry_due_at[user] = world.now
    await retries.tick(world.rt)
    assert await world.settle()
    assert len(world.client.requests) == called

    # The open period over and the heads due: one probe; it succeeds, the breaker
    # closes, and every parked user is asked for at once.
    world.now = max(world.pending(u)["parked"][0]["next_at"] for u in users) + 0.1
    world.client.answers = []
    await retries.tick(world.rt)
    assert await world.settle()
    assert breaker.state is State.CLOSED
    await retries.tick(world.rt)
    assert await world.settle()
    for user in users:
        assert world.tables.pending.get(user) is None, user
    assert world.dead_letters() == []


async def test_a_429_with_a_long_retry_after_opens_the_breaker_for_that_long_capped():
    world = World({"CS_RELAY_MAX_RETRY_AFTER": "120"}, client=FakeClient(answers=[(429, 600.0)]))
    await groups(world, "u1", "u2")
    await track(world, "u1", 1)
    breaker = world.rt.sending.breakers["clientsuccess"]
    assert breaker.state is State.OPEN and breaker.wait(world.now) == 120
    [parked] = world.pending("u1")["parked"]
    assert parked["next_at"] >= world.now + 120
    await track(world, "u2", 1)  # honoured for the destination: u2 is not sent either
    assert len(world.client.requests) == 1  # u1's track only


async def test_401_on_every_request_pauses_the_destination_instead_of_dead_lettering_and_a_probe_resumes():
    world = World()
    users = [f"u{i}" for i in range(5)]
    await groups(world, *users)
    world.client.answers = [401] * 3
    for user in users:
        await track(world, user, 1)
    breaker = world.rt.sending.breakers["clientsuccess"]
    assert breaker.state is State.PAUSED
    assert len(world.client.requests) == 3  # the last two were parked without a request
    assert world.dead_letters() == []
    assert world.rt.counters["parked.clientsuccess"] == 5

    # Still refused at the first probe, then the key is right again.
    world.client.answers = [401]
    world.now = max(p["next_at"] for u in users for p in world.pending(u)["parked"]) + 31
    for user in users:
        world.rt.parking.marks.retry_due_at[user] = world.now
    await retries.tick(world.rt)
    assert await world.settle()
    assert breaker.state is State.PAUSED and world.dead_letters() == []
    world.now += 31
    for user in users:
        world.rt.parking.marks.retry_due_at[user] = world.now
    await retries.tick(world.rt)
    assert await world.settle()
    await retries.tick(world.rt)
    assert await world.settle()
    assert breaker.state is State.CLOSED
    assert all(world.tables.pending.get(u) is None for u in users)
    assert world.dead_letters() == []


async def test_a_single_400_is_still_a_final_refusal_and_a_lone_401_after_others_succeeded_is_too():
    world = World(client=FakeClient(answers=[400]))
    await groups(world, "u1", "u2")
    await track(world, "u1", 1)
    assert [d.reason for d in world.dead_letters()] == ["partner_refused"]

    world.client.answers = [403]
    await track(world, "u1", 2)  # parked, not refused: it may be the key
    assert world.dead_letters()[1:] == []
    world.now += 1
    await track(world, "u2", 1)  # another request succeeds after it
    world.client.answers = [403]
    world.now = world.pending("u1")["parked"][0]["next_at"] + 1
    await retries.tick(world.rt)
    assert await world.settle()
    assert [d.reason for d in world.dead_letters()] == ["partner_refused", "partner_refused"]
    assert world.rt.sending.breakers["clientsuccess"].state is State.CLOSED


async def test_a_recovered_destination_drains_a_users_parked_deliveries_several_per_retry():
    world = World(client=FakeClient(answers=[503]))
    await groups(world, "u1")
    world.client.gate = asyncio.Event()  # the first answer comes after all five are dispatched
    for n in range(1, 6):
        await track(world, "u1", n)
    world.client.gate.set()
    assert await world.settle()
    assert len(world.pending("u1")["parked"]) == 5
    world.now = world.pending("u1")["parked"][0]["next_at"] + 0.1
    world.client.gate = asyncio.Event()
    await retries.tick(world.rt)
    assert not await world.settle(spins=20)
    # The retry of the head has begun; the four behind it are its batch, not retried apart.
    assert len(world.rt.parking.marks.retrying) == 5 and len(world.client.requests) == 2
    world.client.gate.set()
    assert await world.settle()
    assert world.client.events()[-5:] == ["E1", "E2", "E3", "E4", "E5"]
    assert world.tables.pending.get("u1") is None
    assert len(world.controls(b"retried")) == 5 and len(world.controls(b"retry-due")) == 1
