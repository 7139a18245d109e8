"""Packed dedupe rows through the real runtime without a broker (streams.runtime.seenpacks):
the new entries of a partition's events reach the changelog as one record, written when
its linger passes or it is full, the events are acknowledged once it is in Kafka, and
the sweep writes its tombstone once all its entries have expired. Restores:
tests/test_runtime_seenrestore.py."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import faust
import pytest

from streams.core import control, dedupe, seenpack
from streams.core.control import Sweep
from streams.runtime import seentable, sweep
from streams.runtime.acks import ChangelogWrites
from streams.runtime.outbox import BY_USER
from streams.runtime.rowcache import CachedRows
from streams.runtime.runtime import Tables
from streams.runtime.seenpacks import SeenPacks
from tests.runtime_world import BY_USER_TOPIC, PARTITIONS, Produced, World
from tests.seenworld import ENV, StoreTable, packed, publish_together, restarted, restored, seen_world, tracks, users_in


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


async def test_in_the_worker_the_events_wait_for_the_future_of_their_packed_rows_own_write(tmp_path):
    """The worker's seen table (Faust's, on RocksDB, under the row cache, its
    `send_changelog` watched by the acks): the row cache sends the packed row through
    the table's own send, not the acks' watch (`__wrapped__`), and the row's future is
    what the events that joined it wait for, whether the row was written full, inside
    their batch, or by the linger's callback after it."""
    app = faust.App("seen-packs-worker-table", store="rocksdb://", datadir=str(tmp_path))
    table = seentable.seen_table(app, "seen", {})
    sent: list[asyncio.Future] = []

    def send_changelog(partition: int, key: str, value: Any) -> asyncio.Future:
        sent.append(asyncio.get_running_loop().create_future())
        return sent[-1]

    table.send_changelog = send_changelog  # type: ignore[method-assign]
    world = World(ENV, tables=Tables(users={}, pending={}, groups={}, seen=CachedRows(table)))
    world.rt.changelog.watch(table)
    own = table.send_changelog.__wrapped__  # type: ignore[attr-defined]

    def through_the_watch(*args: Any) -> Any:
        raise AssertionError("a packed row is sent by the table's own send, not through the acks' watch")

    through_the_watch.__wrapped__ = own  # type: ignore[attr-defined]
    table.send_changelog = through_the_watch  # type: ignore[method-assign]
    world.rt.seen_packs.max_entries = 2
    await publish_together(world, tracks(users_in(world, 1, 3)))  # a full row in the batch, one by the linger
    assert len(sent) == 2 and world.rt.seen_packs.open_entries(1) == 0
    assert not any(topic == BY_USER_TOPIC for topic, _, _ in world.acked)
    sent[1].set_result(None)
    await world.settle()
    assert not any(topic == BY_USER_TOPIC for topic, _, _ in world.acked)  # the first row still in transit
    sent[0].set_result(None)
    assert await world.settle()
    assert sorted(o for topic, _, o in world.acked if topic == BY_USER_TOPIC) == [0, 1, 2]


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


async def test_the_sweep_tombstones_a_packed_row_once_all_its_entries_expired():
    world = seen_world()
    first, second = users_in(world, 1, 2)
    await world.publish(**tracks([first])[0])
    await world.publish(**tracks([second])[0])
    world.rt.seen_packs.linger = 60.0
    world.now += 300
    late = users_in(world, 1, 3)[2]
    await publish_together(world, tracks([late]))
    world.rt.seen_packs.flush(1)  # the partition of `late`'s open row, before its linger
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
    assert len(gone) == 1 and {seenpack.partition_of_pack(k) for k in gone} == {partition}
    written = {k for p, k, v in packed(world.tables.seen.records) if v is not None and p == partition}
    assert gone == written


def _sweep_record(partition: int) -> Produced:
    value, headers = control.encode(Sweep())
    return Produced(BY_USER, b"", value, headers, partition)


async def test_the_open_rows_of_all_partitions_are_written_together_when_the_first_ones_linger_passes():
    """One timer for every open row: the partitions' packed rows reach the producer at
    the same moment (one produce request), none later than its linger."""
    loop = asyncio.get_running_loop()
    timers: list[tuple[float, Any]] = []
    later = loop.call_later

    def call_later(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        timers.append((delay, functools.partial(callback, *args)))
        return later(3600, lambda: None)

    table = StoreTable()
    packs = SeenPacks(table, ChangelogWrites(), linger=0.05)
    loop.call_later = call_later  # type: ignore[method-assign]
    try:
        for n, partition in enumerate((1, 2, 1, 3)):
            with packs.changelog:
                packs.remember(partition, dedupe.row_key(f"u{n}", "m"), n, 100.0)
        assert [delay for delay, _ in timers] == [0.05] and table.records == []
        timers[0][1]()  # the first row's linger passed: it wakes the coroutine that writes them
        for _ in range(100):
            if table.records:
                break
            await asyncio.sleep(0)
        assert sorted((p, len(v["e"])) for p, _, v in table.records) == [(1, 2), (2, 1), (3, 1)]
        with packs.changelog:
            packs.remember(2, dedupe.row_key("u9", "m"), 9, 101.0)
        assert len(timers) == 2  # the next open row, a timer of its own
        packs.forget([2])
        assert table.records[3:] == []
    finally:
        loop.call_later = later  # type: ignore[method-assign]


async def test_a_row_whose_events_future_was_cancelled_is_written_and_the_writer_goes_on():
    # A batch's writes awaited together (merge.confirm gathers them) and that wait
    # cancelled: the open row's future with it. The row is still written when its
    # linger ends, and the rows opened after it are written at theirs.
    table = StoreTable()
    packs = SeenPacks(table, ChangelogWrites(), linger=0.01)
    with packs.changelog as writes:
        packs.remember(1, dedupe.row_key("u1", "m"), 1, 100.0)
    writes[0].cancel()
    await _until(lambda: len(table.records) == 1)
    with packs.changelog as later:
        packs.remember(1, dedupe.row_key("u2", "m"), 2, 100.0)
    await _until(lambda: len(table.records) == 2)
    assert later[0].done() and later[0].result() is table.futures[1]  # settled with its write
    packs.stop()


async def _until(condition: Any, seconds: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), seconds)
