"""The sweep, through the real runtime without a broker: in each partition's own
stream, held events past their age bound are dead-lettered and expired dedupe rows
pruned, for users who went quiet; other partitions' users are not touched."""

from __future__ import annotations

from streams.core import control, dedupe, seenpack
from streams.core.control import Sweep
from streams.runtime import sweep
from streams.runtime.outbox import BY_USER
from tests.runtime_world import PARTITIONS, Produced, World

ENV = {"CS_RELAY_PENDING_MAX_AGE_SECONDS": "3600", "CS_RELAY_DEDUPE_WINDOW_SECONDS": "600"}


async def quiet_users(world: World) -> None:
    # No group: ClientSuccess holds their track calls.
    await world.publish(type="track", userId="quiet", event="Alone", messageId="q1")
    await world.publish(type="track", userId="other", event="Alone", messageId="o1")
    assert world.pending("quiet")["held"] and seen_users(world) == {"quiet", "other"}


def seen_users(world: World) -> set[str]:
    """The users with dedupe rows (one index row per routed messageId; the packed rows
    that carry them to the changelog belong to no user)."""
    return {dedupe.user_of(key) for key in world.tables.seen if not seenpack.is_pack_key(key)}


async def test_the_sweep_dead_letters_expired_held_events_and_prunes_dedupe_rows():
    world = World(ENV)
    await quiet_users(world)
    world.now += 3601
    await sweep.request_sweeps(world.rt)
    sweeps = world.controls(Sweep.KIND)
    assert sorted(r.partition for r in sweeps) == list(range(PARTITIONS)) and {r.key for r in sweeps} == {b""}
    assert await world.settle()

    dead = world.dead_letters()
    assert sorted(d.key for d in dead) == [b"other", b"quiet"]
    assert {d.reason for d in dead} == {"pending_expired"}
    assert {d.headers["cs-relay-stage"] for d in dead} == {b"routing"}
    assert world.tables.pending == {} and world.tables.payloads == {} and world.tables.seen == {}


async def test_a_sweep_touches_only_the_users_of_its_own_partition():
    world = World(ENV)
    await quiet_users(world)
    world.now += 3601
    mine = world.rt.partition_of("quiet")
    assert world.rt.partition_of("other") != mine  # the two users live apart
    for partition in [p for p in range(PARTITIONS) if p != mine]:
        world.outbox.records.append(_sweep_record(partition))
    assert await world.settle()
    assert [d.key for d in world.dead_letters()] == [b"other"]
    assert world.pending("quiet")["held"] and "quiet" in seen_users(world)
    world.outbox.records.append(_sweep_record(mine))
    assert await world.settle()
    assert sorted(d.key for d in world.dead_letters()) == [b"other", b"quiet"]
    assert world.tables.pending == {} and world.tables.payloads == {} and world.tables.seen == {}


async def test_a_sweep_within_the_bounds_keeps_everything():
    world = World(ENV)
    await quiet_users(world)
    world.now += 60
    await sweep.request_sweeps(world.rt)
    assert await world.settle()
    assert world.dead_letters() == []
    assert world.pending("quiet")["held"] and seen_users(world) == {"quiet", "other"}


def _sweep_record(partition: int) -> Produced:
    value, headers = control.encode(Sweep())
    return Produced(BY_USER, b"", value, headers, partition)


async def test_a_user_record_of_an_older_version_still_catches_duplicates_and_is_pruned():
    """Earlier, a user's routed ids were one record keyed by the user; after an upgrade
    it still catches a duplicate within the window, and the sweep prunes it."""
    world = World(ENV)
    world.tables.seen["old"] = dedupe.Seen({"o-1": (3, world.now - 10)}).to_dict()
    await world.publish(type="track", userId="old", event="Again", messageId="o-1")  # another record: a duplicate
    assert world.rt.counters["duplicates"] == 1 and world.tables.pending == {}
    world.now += 601
    await sweep.request_sweeps(world.rt)
    assert await world.settle()
    assert world.tables.seen == {}


async def test_a_users_dedupe_cost_does_not_grow_with_its_history():
    world = World(ENV)
    await world.publish(type="group", userId="busy", groupId="g", traits={"name": "G"}, messageId="g")
    for n in range(50):
        await world.publish(type="track", userId="busy", event=f"E{n}", messageId=f"b-{n}")
    rows = {k: v for k, v in world.tables.seen.items() if dedupe.user_of(k) == "busy"}
    assert len(rows) == 51 and max(len(str(v)) for v in rows.values()) < 40  # one small row per id
    await world.publish(type="track", userId="busy", event="E0 again", messageId="b-0")
    assert world.rt.counters["duplicates"] == 1
