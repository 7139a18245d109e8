"""Packed dedupe rows through the real runtime without a broker (streams.runtime.seenpacks,
streams.runtime.seentable): the new entries of a partition's events reach the changelog
as one record, the events are acknowledged once it is in Kafka, a fresh table restores
the index rows from it (and from the rows older workers wrote), so that a duplicate
sent after a restart or a take-over is still dropped, and the sweep writes its tombstone
once all its entries have expired."""

from __future__ import annotations

import asyncio
import itertools
import json
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from streams.core import control, dedupe, seenpack
from streams.core.control import Sweep
from streams.runtime import agents, seentable, sweep
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, INPUT, PARTITIONS, Produced, World

ENV = {"CS_RELAY_DEDUPE_WINDOW_SECONDS": "600"}
_apps = itertools.count()


class StoreTable(dict):
    """The `seen` table as a worker has it: rows written to the local store alone
    (`put_local`), packed rows to the changelog too (`write_packed`), any other write
    and delete through the changelog. Every changelog record is kept (`records`:
    partition, key, value; None a tombstone) with the write's future, which Kafka's
    acknowledgement completes: at once, unless `held`."""

    def __init__(self, rows: dict[str, Any] | None = None, *, held: bool = False) -> None:
        super().__init__(rows or {})
        self.held = held
        self.records: list[tuple[int | None, str, Any]] = []
        self.futures: list[asyncio.Future] = []

    def send_changelog(self, partition: int | None, key: str, value: Any) -> asyncio.Future:
        written: asyncio.Future = asyncio.get_running_loop().create_future()
        self.records.append((partition, key, value))
        self.futures.append(written)
        if not self.held:
            written.set_result(None)
        return written

    def put_local(self, partition: int, key: str, value: Any) -> None:
        super().__setitem__(key, value)

    def delete_local(self, partition: int, key: str) -> None:
        self.pop(key, None)

    def write_packed(self, partition: int, key: str, value: Any) -> asyncio.Future:
        self.put_local(partition, key, value)
        return self.send_changelog(partition, key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.send_changelog(None, key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.send_changelog(None, key, None)

    def in_kafka(self) -> list[tuple[int | None, str, Any]]:
        """The records Kafka has acknowledged."""
        return [r for r, f in zip(self.records, self.futures, strict=True) if f.done() and not f.cancelled()]


def seen_world(seen: StoreTable | None = None, **rest: Any) -> World:
    seen = seen if seen is not None else StoreTable()
    world = World(ENV, tables=Tables(users={}, pending={}, groups={}, seen=seen, **rest))
    world.rt.changelog.watch(seen)
    return world


def restored(records: list[tuple[int | None, str, Any]]) -> dict[str, Any]:
    """What a fresh worker's `seen` table holds once it has read `records` from the
    changelog (Faust's in-memory store, recovery's own call)."""
    app = faust.App(f"seen-restore-{next(_apps)}", store="memory://")
    table = seentable.seen_table(app, "seen", {})
    table.apply_changelog_batch(changelog_events(records))
    return dict(table.data.data)


def changelog_events(records: list[tuple[int | None, str, Any]], first_offset: int = 0) -> list[Any]:
    """Changelog records as recovery hands them to a table (the in-memory store reads
    the decoded key and value)."""
    events = []
    for n, (p, k, v) in enumerate(records, start=first_offset):
        message = SimpleNamespace(tp=TP("seen-changelog", p or 0), partition=p or 0, offset=n, value=v)
        events.append(SimpleNamespace(key=k, value=v, message=message))
    return events


async def publish_together(world: World, messages: list[dict[str, Any]]) -> None:
    """Segment calls taken by intake one after another, then routed in one turn of the
    loop (as a worker takes what its stream has buffered)."""
    for body in messages:
        record = world._incoming(INPUT, None, json.dumps(body).encode(), {}, 0)
        world._register(record, [await agents.admit(world.rt, record)])
    await world.settle()


def users_in(world: World, partition: int, n: int) -> list[str]:
    return [u for u in (f"user-{i}" for i in range(1000)) if world.rt.partition_of(u) == partition][:n]


def packed(records: list[tuple[int | None, str, Any]]) -> list[tuple[int | None, str, Any]]:
    return [r for r in records if seenpack.is_pack_key(r[1])]


def tracks(users: list[str], tag: str = "t") -> list[dict[str, Any]]:
    return [{"type": "track", "userId": u, "event": "E", "messageId": f"{tag}-{u}"} for u in users]


async def test_the_new_entries_of_a_partitions_events_are_one_changelog_record():
    world = seen_world()
    users = users_in(world, 1, 12) + users_in(world, 2, 5)
    await publish_together(world, tracks(users))
    records = world.tables.seen.records
    assert len(records) == 2 and packed(records) == records  # no record of its own per entry
    assert sorted(p for p, _, _ in records) == [1, 2]
    entries = {k for _, _, v in records for k, _ in seenpack.expand(v)}
    assert entries == {dedupe.row_key(u, f"t-{u}") for u in users}
    # ... and each entry's index row is in the store, read as any dedupe row.
    assert all(seenpack.is_packed_index(world.tables.seen[k]) for k in entries)


async def test_the_events_wait_for_their_packed_row_to_be_in_kafka():
    seen = StoreTable(held=True)
    world = seen_world(seen)
    await publish_together(world, tracks(users_in(world, 1, 4)))
    assert len(seen.futures) == 1 and not any(topic == BY_USER_TOPIC for topic, _, _ in world.acked)
    seen.futures[0].set_result(None)
    assert await world.settle()
    assert sorted(o for topic, _, o in world.acked if topic == BY_USER_TOPIC) == [0, 1, 2, 3]


async def test_a_packed_row_kafka_refuses_stops_the_worker_and_acknowledges_nothing():
    seen = StoreTable(held=True)
    world = seen_world(seen)
    stopped: list[BaseException] = []
    world.rt.stop = stopped.append
    await publish_together(world, tracks(users_in(world, 1, 3)))
    seen.futures[0].set_exception(RuntimeError("MessageSizeTooLargeError"))
    await world.settle()
    assert not any(topic == BY_USER_TOPIC for topic, _, _ in world.acked)
    assert len(stopped) == 1 and "MessageSizeTooLarge" in (world.rt.failure or "")


async def test_a_packed_row_is_written_when_its_linger_passes_or_when_it_is_full():
    world = seen_world()
    world.rt.seen_packs.linger = 0.05
    world.rt.seen_packs.max_entries = 3
    users = users_in(world, 1, 7)
    for user in users[:2]:  # handled in turns of their own, within the linger
        await world.publish(**tracks([user])[0])
    assert world.tables.seen.records == [] and world.rt.seen_packs.open_entries(1) == 2
    await publish_together(world, tracks(users[2:]))  # fills the row: written at once, and the next opened
    assert [len(v["e"]) for _, _, v in world.tables.seen.records] == [3, 3]
    assert world.rt.seen_packs.open_entries(1) == 1
    await asyncio.wait_for(_written(world, 3), timeout=5)  # the linger ran out
    assert sorted(k for _, _, v in world.tables.seen.records for k, _ in seenpack.expand(v)) == sorted(
        dedupe.row_key(u, f"t-{u}") for u in users
    )


async def _written(world: World, n: int) -> None:
    while len(world.tables.seen.records) < n:
        await asyncio.sleep(0.01)


async def test_a_revoked_partition_drops_its_open_row():
    world = seen_world()
    world.rt.seen_packs.linger = 60.0
    await publish_together(world, tracks(users_in(world, 1, 2)))
    assert world.rt.seen_packs.open_entries(1) == 2
    await world.rt.revoked([(BY_USER_TOPIC, 1)])
    assert world.rt.seen_packs.open_entries(1) == 0 and world.tables.seen.records == []


async def restarted(before: World, seen: dict[str, Any]) -> World:
    """A fresh worker over what `before` made durable: its tables, `seen` restored from
    the changelog; the topics' offsets go on where they were."""
    t = before.tables
    after = seen_world(StoreTable(seen))
    for name in ("users", "pending", "groups", "payloads"):
        getattr(after.tables, name).update(getattr(t, name))
    after.offsets = before.offsets.copy()
    return after


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
    app = faust.App(f"seen-standby-{next(_apps)}", store="memory://")
    standby = seentable.seen_table(app, "seen", {})
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


async def test_the_sweep_tombstones_a_packed_row_once_all_its_entries_expired():
    world = seen_world()
    first, second = users_in(world, 1, 2)
    await world.publish(**tracks([first])[0])
    await world.publish(**tracks([second])[0])
    world.rt.seen_packs.linger = 60.0
    world.now += 300
    late = users_in(world, 1, 3)[2]
    await publish_together(world, tracks([late]))
    world.rt.seen_packs.flush_all()
    assert await world.settle()
    pack_keys = [k for _, k, _ in packed(world.tables.seen.records)]
    assert len(pack_keys) == 3
    del world.tables.seen.records[:]

    world.now += 301  # past the window for the first two rows, not for the third
    await sweep.request_sweeps(world.rt)
    assert await world.settle()
    tombstones = [k for _, k, v in world.tables.seen.records if v is None]
    assert sorted(tombstones) == sorted(pack_keys[:2]) and len(world.tables.seen.records) == 2
    assert set(world.tables.seen) == {pack_keys[2], dedupe.row_key(late, f"t-{late}")}

    world.now += 300
    await sweep.request_sweeps(world.rt)
    assert await world.settle()
    assert world.tables.seen == {} and [k for _, k, _ in world.tables.seen.records] == pack_keys
    # A fresh table reading the changelog, tombstones included, keeps no packed row.
    rows = restored([(1, k, None) for k in pack_keys])
    assert not any(seenpack.is_pack_key(k) for k in rows)


async def test_a_restored_worker_sweeps_the_packed_rows_it_read_from_the_changelog():
    before = seen_world()
    users = users_in(before, 0, 2) + users_in(before, 3, 2)
    await publish_together(before, tracks(users))
    pack_keys = {k for _, k, _ in before.tables.seen.in_kafka()}
    after = await restarted(before, restored(before.tables.seen.in_kafka()))
    after.now += 601
    await sweep.request_sweeps(after.rt)
    assert await after.settle()
    assert {k for _, k, v in after.tables.seen.records if v is None} == pack_keys and len(pack_keys) == 2
    assert after.tables.seen == {}  # the index rows too, from the store alone


@pytest.mark.parametrize("partition", range(PARTITIONS))
async def test_the_sweep_reads_the_packed_rows_of_its_own_partition_only(partition):
    world = seen_world()
    users = [users_in(world, p, 1)[0] for p in range(PARTITIONS)]
    await publish_together(world, tracks(users))
    world.now += 601
    world.outbox.records.append(_sweep_record(partition))
    assert await world.settle()
    gone = {k for _, k, v in world.tables.seen.records if v is None}
    assert gone == {seenpack.pack_key(partition, _position(world, partition))}


def _position(world: World, partition: int) -> int:
    return next(r.position for r in world.taken if r.partition == partition)


def _sweep_record(partition: int) -> Produced:
    value, headers = control.encode(Sweep())
    return Produced(BY_USER, b"", value, headers, partition)
