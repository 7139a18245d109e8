"""The park / retry-due / retried cycle, driven through the real runtime without a
broker (tests/runtime_world.py): a delivery answered 503 is parked, the user's later
event waits behind it, the retry tick asks for it, and a retry answered 200 releases
the next event in order."""

from __future__ import annotations

from streams.core.control import KIND_HEADER
from streams.runtime import retries
from streams.runtime.parking import OldestParked
from tests.runtime_world import PARTITIONS, FakeClient, World


async def group_then(world: World, user: str = "u1") -> None:
    await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")


async def test_a_503_is_parked_later_events_wait_and_a_200_retry_releases_them_in_order():
    world = World(client=FakeClient(answers=[503]))
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")

    # Parked durably in the user's pending record, via a park record to the user.
    assert [r.key for r in world.controls(b"park")] == [b"u1"]
    parked = world.pending("u1")["parked"]
    assert [p["message_id"] for p in parked] == ["t1"]
    assert world.acked and not world.rt.parking.marks.parking  # the event is acknowledged, the mark cleared

    await world.publish(type="track", userId="u1", event="Second", messageId="t2")
    assert world.client.events() == ["First"]  # the second waits behind the parked one
    assert [h["raw"] for h in world.pending("u1")["held"]] and '"t2"' in world.pending("u1")["held"][0]["raw"]

    # Not due yet: the tick asks for nothing.
    await retries.tick(world.rt)
    assert world.controls(b"retry-due") == []

    world.now = parked[0]["next_at"] + 0.1
    await retries.tick(world.rt)
    due = world.controls(b"retry-due")
    assert len(due) == 1 and due[0].key == b"" and due[0].partition == world.rt.partition_of("u1")
    assert await world.settle()

    assert world.client.events() == ["First", "First", "Second"]
    retried = world.controls(b"retried")
    assert len(retried) == 1 and b'"outcome": "done"' in retried[0].value
    assert world.tables.pending.get("u1") is None and world.tables.payloads == {}  # nothing parked, held or releasing
    assert world.dead_letters() == []
    assert "u1" not in world.rt.parking.marks.retry_due_at and not world.rt.parking.marks.retrying
    # done: the retried head and the released second event; parked: the first only.
    assert world.rt.counters["done.clientsuccess"] == 2 and world.rt.counters["parked.clientsuccess"] == 1


async def test_a_retry_answered_503_again_is_put_off_and_a_final_refusal_is_dead_lettered():
    world = World(client=FakeClient(answers=[503, 503, 400]))
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    first = world.pending("u1")["parked"][0]

    world.now = first["next_at"] + 0.1
    await retries.tick(world.rt)
    assert await world.settle()
    again = world.pending("u1")["parked"][0]
    assert again["next_at"] > world.now and again["attempts"] == first["attempts"] + 1
    assert world.dead_letters() == []

    world.now = again["next_at"] + 0.1
    await retries.tick(world.rt)
    assert await world.settle()
    assert world.client.events() == ["First", "First", "First"]
    [dead] = world.dead_letters()
    assert dead.reason == "partner_refused" and dead.headers["cs-relay-destination"] == b"clientsuccess"
    assert dead.headers["cs-relay-status"] == b"400" and b'"messageId": "t1"' in dead.value
    assert world.tables.pending.get("u1") is None


async def test_the_retry_window_ends_in_retries_exhausted():
    world = World({"CS_RELAY_RETRY_WINDOW_SECONDS": "60"}, client=FakeClient(answers=[503, 503]))
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    world.now += 120  # past the window: the next failure is the last
    await retries.tick(world.rt)
    assert await world.settle()
    [dead] = world.dead_letters()
    assert dead.reason == "retries_exhausted" and dead.headers["cs-relay-stage"] == b"delivery"


async def test_a_parked_head_is_not_retried_twice_while_its_retry_runs():
    import asyncio

    gate = asyncio.Event()
    world = World(client=FakeClient(answers=[503], gate=None))
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    world.client.gate = gate  # the retry hangs until the gate opens
    world.now = world.pending("u1")["parked"][0]["next_at"] + 0.1
    await retries.tick(world.rt)
    assert not await world.settle(spins=20)
    world.now += 60  # the partition has not answered: asked again, but not retried again
    await retries.tick(world.rt)
    assert not await world.settle(spins=20)
    assert world.client.events() == ["First", "First"]
    gate.set()
    assert await world.settle()
    assert world.tables.pending.get("u1") is None


async def test_after_a_rebalance_the_tick_finds_parked_deliveries_of_newly_owned_users():
    world = World(client=FakeClient(answers=[503]))
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    world.rt.parking.marks.retry_due_at.clear()  # a new owner knows nothing of u1 in memory
    world.now += 3600
    await retries.tick(world.rt)
    assert world.controls(b"retry-due") == []
    world.rt.assigned({world.rt.partition_of("u1")})  # the rebalance hands the partition over
    await retries.tick(world.rt)
    assert [r.headers[KIND_HEADER] for r in world.controls(b"retry-due")] == [b"retry-due"]
    assert await world.settle()
    assert world.client.events() == ["First", "First"] and world.tables.pending.get("u1") is None


async def test_the_oldest_parked_age_follows_parking_retries_and_lost_partitions():
    """The age gauge of /metrics is kept as pending records are written (no table scan at
    scrape time): it appears when a delivery is parked, grows with the clock, survives a
    retry answered 503 again (same first failure), and goes when the retry succeeds or
    the user's partition goes to another worker."""
    world = World(client=FakeClient(answers=[503, 503, 200]))
    marks = world.rt.parking.marks
    assert marks.parked_since.ages(world.now) == {}
    await group_then(world)
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    first = world.pending("u1")["parked"][0]
    assert marks.parked_since.oldest() == {"clientsuccess": first["first_failed_at"]}
    assert marks.parked_since.ages(first["first_failed_at"] + 90) == {"clientsuccess": 90}

    world.now = first["next_at"] + 0.1
    await retries.tick(world.rt)
    assert await world.settle()
    assert world.pending("u1")["parked"][0]["attempts"] > first["attempts"]  # retried, answered 503 again
    assert marks.parked_since.oldest() == {"clientsuccess": first["first_failed_at"]}

    world.now = world.pending("u1")["parked"][0]["next_at"] + 0.1
    await retries.tick(world.rt)
    assert await world.settle()
    assert world.tables.pending.get("u1") is None
    assert marks.parked_since.ages(world.now) == {}

    # A rescan after an assignment finds what the table holds; a partition that goes, goes.
    world.client.answers = [503]
    await world.publish(type="track", userId="u1", event="Again", messageId="t3")
    assert "clientsuccess" in marks.parked_since.oldest()
    marks.parked_since.forget(lambda user: True)
    assert marks.parked_since.oldest() == {}
    world.rt.assigned(set(range(PARTITIONS)))  # a rescan reads the partitions assigned here
    await retries.tick(world.rt)
    assert marks.parked_since.oldest() == {"clientsuccess": world.pending("u1")["parked"][0]["first_failed_at"]}
    world.rt.assigned({world.rt.partition_of("u1")})
    world.rt.assigned(set())  # the user's partition went elsewhere
    assert marks.parked_since.oldest() == {}


def test_oldest_parked_keeps_the_minimum_through_updates_and_stays_bounded():
    index = OldestParked()
    index.update("a", {"cs": 10.0})
    index.update("b", {"cs": 5.0, "csb": 7.0})
    assert index.oldest() == {"cs": 5.0, "csb": 7.0}
    index.update("b", {"csb": 7.0})  # b's cs delivery went through
    assert index.oldest() == {"cs": 10.0, "csb": 7.0}
    index.update("a", {"cs": 12.0})  # a's head went, the next one failed later
    assert index.oldest() == {"cs": 12.0, "csb": 7.0}
    index.update("a", {})
    index.update("b", {})
    assert index.oldest() == {} and index.ages(100.0) == {}
    for n in range(10_000):  # one user's time changing over and over: stale heap entries are compacted
        index.update("c", {"cs": float(n)})
    assert index.oldest() == {"cs": 9999.0}
    assert len(index._heaps["cs"]) <= 2 * 1 + 64 + 1
