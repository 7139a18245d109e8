"""Packed dedupe rows restored (streams.runtime.seentable): a fresh table, or a standby,
expands the packed rows it reads from the changelog into index rows (and keeps the rows
older workers wrote), so that after a restart or a take-over a duplicate is still
dropped, a record redone is handled again, and an entry whose packed row never reached
Kafka is handled again (at least once) and written then."""

from __future__ import annotations

from typing import Any

from streams.core import dedupe, seenpack
from tests.runtime_world import BY_USER_TOPIC
from tests.seenworld import (
    StoreTable,
    changelog_events,
    fresh_table,
    packed,
    publish_together,
    restarted,
    restored,
    seen_world,
    tracks,
    users_in,
)


async def test_after_a_restart_a_duplicate_is_dropped_and_a_redone_record_handled_again():
    before = seen_world()
    users = users_in(before, 1, 3) + users_in(before, 3, 2)
    await publish_together(before, tracks(users))
    assert before.client.requests == []  # no group: ClientSuccess holds them; nothing sent

    after = await restarted(before, restored(before.tables.seen.in_kafka()))
    # The lookup is a point read of an index row the packed rows expanded into.
    assert all(seenpack.is_packed_index(after.tables.seen[dedupe.row_key(u, f"t-{u}")]) for u in users)
    await publish_together(after, tracks(users))  # the same messageIds, other records
    assert after.rt.counters["duplicates"] == len(users)
    redone = before.taken[0]  # the same record again, its offset not committed: handled again
    assert await after.redo(redone)
    assert after.rt.counters["duplicates"] == len(users)


async def test_a_standby_that_takes_over_drops_a_duplicate_sent_after_the_take_over():
    """A standby reads the changelog as it comes, a batch at a time (Faust's standby
    buffer), into one table; the worker it stands by for goes on meanwhile."""
    active = seen_world()
    standby = fresh_table()
    applied = 0
    users = users_in(active, 2, 6)
    for part in (users[:3], users[3:]):
        await publish_together(active, tracks(part))
        batch = active.tables.seen.in_kafka()[applied:]
        standby.apply_changelog_batch(changelog_events(batch, applied))
        applied += len(batch)
    assert applied == 2
    after = await restarted(active, dict(standby.data.data))
    await publish_together(after, tracks(users))
    assert after.rt.counters["duplicates"] == len(users) and after.client.requests == []


async def test_an_event_whose_packed_row_never_reached_kafka_is_handled_again():
    seen = StoreTable(held=True)
    before = seen_world(seen)
    users = users_in(before, 2, 3)
    await publish_together(before, tracks(users))
    assert seen.in_kafka() == []  # the worker dies before Kafka has the row: nothing acknowledged

    after = await restarted(before, restored(seen.in_kafka()))
    for record in before.taken:
        assert await after.redo(record)
    assert after.rt.counters["duplicates"] == 0  # handled again, at least once
    written = {k for _, _, v in packed(after.tables.seen.records) for k, _ in seenpack.expand(v)}
    assert written == {dedupe.row_key(u, f"t-{u}") for u in users}  # remembered now


async def test_a_redone_event_found_in_the_local_store_makes_its_entry_durable():
    """The worker's own store kept an index row whose packed row never reached Kafka
    (a crash in between): the record redone is handled again, and its entry goes to
    the changelog this time, with its first time."""
    seen = StoreTable(held=True)
    before = seen_world(seen)
    user = users_in(before, 2, 1)[0]
    await publish_together(before, tracks([user]))
    first_time = seen[dedupe.row_key(user, f"t-{user}")][1]

    local = {k: v for k, v in seen.items() if not seenpack.is_pack_key(k)}  # what the store kept
    after = await restarted(before, local)
    after.now += 30
    assert await after.redo(before.taken[0])
    assert after.rt.counters["duplicates"] == 0
    [(_, _, value)] = packed(after.tables.seen.records)
    assert seenpack.expand(value) == [(dedupe.row_key(user, f"t-{user}"), seenpack.index_row(0, first_time))]


async def test_a_worker_upgraded_over_an_older_changelog_keeps_its_entries():
    """Rows written by older workers: one row per id (with a changelog record of its
    own), and a user's whole record before that. A fresh table restores them as they
    are, and both still catch duplicates."""
    world = seen_world()
    now = world.now
    older = [
        (1, dedupe.row_key("per-id", "m-1"), dedupe.row(0, now - 10)),
        (2, "per-user", dedupe.Seen({"m-2": (0, now - 20)}).to_dict()),
    ]
    after = seen_world(StoreTable(restored(older)))
    after.offsets[(BY_USER_TOPIC, after.rt.partition_of("per-id"))] = 5
    after.offsets[(BY_USER_TOPIC, after.rt.partition_of("per-user"))] = 5
    await publish_together(
        after,
        [
            {"type": "track", "userId": "per-id", "event": "E", "messageId": "m-1"},
            {"type": "track", "userId": "per-user", "event": "E", "messageId": "m-2"},
        ],
    )
    assert after.rt.counters["duplicates"] == 2


def compacted(records: list[tuple[int | None, str, Any]]) -> list[tuple[int | None, str, Any]]:
    """What Kafka's compaction leaves of a changelog: the last record of each key."""
    last = {key: (partition, key, value) for partition, key, value in records}
    return [r for r in last.values() if r[2] is not None]


async def test_a_redone_record_never_takes_the_key_of_a_packed_row_in_kafka():
    """The changelog is compacted by key: a packed row written for a redone record under
    the key of one already in Kafka would, once compacted, lose that row's other entries
    (of events committed since)."""
    before = seen_world()
    first, other = users_in(before, 1, 2)
    await publish_together(before, tracks([first, other]))  # one packed row, both entries
    after = await restarted(before, restored(before.tables.seen.in_kafka()))
    assert await after.redo(before.taken[0])  # the first record again: its entry written again
    log = before.tables.seen.in_kafka() + after.tables.seen.in_kafka()
    assert len(packed(log)) == 2
    rows = restored(compacted(log))
    assert dedupe.row_key(other, f"t-{other}") in rows and dedupe.row_key(first, f"t-{first}") in rows


async def test_a_partition_assigned_back_redoes_the_events_of_its_dropped_open_row():
    """Every rebalance revokes all partitions (aiokafka's eager protocol) and Faust keeps
    a partition's RocksDB store while it stays here: the index rows of the open row the
    revoke dropped (never in Kafka) are still in the store. They record the by-user
    offset, so the records read again from the committed offset are the same records
    (handled again, their entries written now), while the calls produced again by a
    redone intake (other offsets) are duplicates of them."""
    world = seen_world()
    world.rt.seen_packs.linger = 60.0  # the row stays open until the rebalance
    users = users_in(world, 1, 3)
    await publish_together(world, tracks(users))
    assert world.rt.seen_packs.open_entries(1) == 3
    assert not [a for a in world.acked if a[0] == BY_USER_TOPIC]  # they wait for the row
    await world.rt.revoked([(BY_USER_TOPIC, 1)])
    world.rt.assigned({1})
    assert all(dedupe.row_key(u, f"t-{u}") in world.tables.seen for u in users)  # left in the store

    world.rt.seen_packs.linger = 0.0
    for record in world.taken:
        assert await world.redo(record)
    assert world.rt.counters["duplicates"] == 0
    assert {(BY_USER_TOPIC, 1, r.offset) for r in world.taken} <= set(world.acked)
    written = {k for _, _, v in packed(world.tables.seen.records) for k, _ in seenpack.expand(v)}
    assert written == {dedupe.row_key(u, f"t-{u}") for u in users}
    await publish_together(world, tracks(users))  # intake redone: the same calls at new offsets
    assert world.rt.counters["duplicates"] == len(users)
