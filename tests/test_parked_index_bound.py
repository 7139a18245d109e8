"""What a worker keeps in memory per user with parked deliveries (when each user's next
retry is due, since when its oldest parked delivery waits: streams.runtime.parking) is
bounded by bytes: an outage parks every active user's deliveries, and a million users
were a few hundred MB. Past the bound a user is not indexed; its deliveries stay parked
in the table, where the retry rescan finds them once the index has drained to half its
bound: every parked delivery is still retried, none before its time. The age gauge never
reads younger than the oldest delivery left out."""

from __future__ import annotations

from streams.runtime import retries
from streams.runtime.parking import USER_BYTES, ParkingMarks
from tests.runtime_world import PARTITIONS, FakeClient, World


def test_past_its_bound_the_index_leaves_users_out_and_asks_for_a_rescan_once_drained():
    marks = ParkingMarks(max_bytes=4 * USER_BYTES)
    for n in range(6):
        marks.index(f"u{n}", 100.0 + n, {"cs": 50.0 - n})
    assert sorted(marks.retry_due_at) == ["u0", "u1", "u2", "u3"]
    assert marks.overflowed and not marks.wants_rescan()
    # u5's delivery (failed first at 45) is not indexed, and is the oldest: the gauge says so.
    assert marks.parked_since.oldest() == {"cs": 45.0}
    marks.index("u0", 200.0, {"cs": 50.0})  # an indexed user's change is kept
    assert marks.retry_due_at["u0"] == 200.0
    marks.index("u0", None, {})  # u0's and u1's parked deliveries went through
    assert not marks.wants_rescan()
    marks.index("u1", None, {})
    assert len(marks.retry_due_at) == 2 and marks.wants_rescan()
    marks.rescan_begins()  # the rescan finds u4 and u5 in the table again
    assert not marks.overflowed and marks.parked_since.oldest() == {"cs": 47.0}
    marks.index("u4", 104.0, {"cs": 46.0})
    marks.index("u5", 105.0, {"cs": 45.0})
    assert sorted(marks.retry_due_at) == ["u2", "u3", "u4", "u5"] and not marks.overflowed
    assert marks.parked_since.oldest() == {"cs": 45.0}


async def test_every_parked_user_is_retried_though_the_index_holds_only_some_of_them():
    world = World(client=FakeClient())
    world.rt.parking.marks = ParkingMarks(max_bytes=3 * USER_BYTES)
    world.rt.assigned(set(range(PARTITIONS)))
    users = [f"u{n}" for n in range(8)]
    for user in users:
        await world.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"g-{user}")
    world.client.answers = [503] * len(users)  # an outage: each user's track parks
    for user in users:
        await world.publish(type="track", userId=user, event="Parked", messageId=f"t-{user}")
    assert all(world.pending(user)["parked"] for user in users)
    assert len(world.rt.parking.marks.retry_due_at) == 3 and world.rt.parking.marks.overflowed
    # The partner is back: ticks retry the indexed users, then the rescan finds the others.
    for _ in range(20):
        world.now += 400  # past any retry's backoff (CS_RELAY_RETRY_MAX_DELAY, 300 s)
        await retries.tick(world.rt)
        assert await world.settle()
        if not any(world.pending(user) for user in users):
            break
    assert not any(world.pending(user) for user in users)
    delivered = [e for e in world.client.events() if e == "Parked"]
    assert len(delivered) == 2 * len(users)  # each: the failed request, then its retry
    assert not world.rt.parking.marks.retry_due_at and not world.rt.parking.marks.overflowed
    assert not world.dead_letters()
