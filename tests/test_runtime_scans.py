"""No blocking scans on the event loop (issue 16, item 7), through the real runtime
without a broker: pending counts kept as records are written, not decoded per scrape;
the retry rescan and the sweep work in bounded chunks; a timer whose produce raises is
logged and retried; retry-due records are bounded; the sweep dead-letters parked
deliveries past the retry window without waiting for a retry's answer."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

from streams.core import control
from streams.core.control import RetryDue, Sweep
from streams.core.pendingcounts import pending_counts
from streams.ops.admin import Admin
from streams.ops.observe import Stats
from streams.runtime import retries, sweep, timers
from streams.runtime.outbox import BY_USER
from streams.runtime.runtime import Tables
from tests.runtime_world import PARTITIONS, FakeClient, Produced, World

ENV = {"CS_RELAY_PENDING_MAX_AGE_SECONDS": "3600", "CS_RELAY_DEDUPE_WINDOW_SECONDS": "600"}


def users_of(world: World, partition: int, count: int, prefix: str = "u") -> list[str]:
    out, n = [], 0
    while len(out) < count:
        key = f"{prefix}{n}"
        if world.rt.partition_of(key) == partition:
            out.append(key)
        n += 1
    return out


async def hold(world: World, user: str, n: int = 1) -> None:
    for i in range(n):  # no group: ClientSuccess holds the calls
        await world.publish(type="track", userId=user, event=f"E{i}", messageId=f"{user}-{i}")


# ------------------------------------------------------------------ counts


async def test_pending_counts_follow_every_write_and_the_assignment():
    world = World(ENV)
    a, b = users_of(world, 0, 1)[0], users_of(world, 1, 1)[0]
    await hold(world, a, 2)
    await hold(world, b, 1)
    counts = world.rt.rows.pending_counts.counts
    assert counts() == pending_counts(world.tables.pending.values())
    assert counts()["clientsuccess"]["held"] == 3
    await world.publish(type="group", userId=a, groupId="g1", traits={"name": "Acme"}, messageId=f"{a}-g")
    assert counts() == pending_counts(world.tables.pending.values()) and counts()["clientsuccess"]["held"] == 1
    world.rt.assigned(set(range(PARTITIONS)) - {1})  # b's partition went to another worker
    assert counts().get("clientsuccess", {}).get("held", 0) == 0


class Unscannable(dict):
    def values(self) -> Any:
        raise AssertionError("the pending table was scanned")

    def items(self) -> Any:
        raise AssertionError("the pending table was scanned")


def test_status_and_metrics_read_the_counts_not_the_table():
    kept = {"clientsuccess": {"held": 4, "releasing": 0, "parked": 2}}
    admin = Admin(
        app=None,  # type: ignore[arg-type]
        settings=World().settings,
        users={},
        pending=Unscannable(),
        groups={},
        source_topics=(),
        partitions=PARTITIONS,
        counters={},
        unacknowledged=lambda: 0,
        destinations={"clientsuccess": "ClientSuccess"},
        stats=Stats(),
        pending_counts=lambda: kept,
    )
    admin.lag = dict  # type: ignore[method-assign]  # no consumer here
    admin.readiness = lambda: (True, {})  # type: ignore[method-assign]
    assert admin.snapshot().pending == kept


# ------------------------------------------------------------------ timers


async def test_a_timer_whose_produce_raises_is_logged_and_retried(caplog):
    world = World(client=FakeClient(answers=[503]))
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    world.now = world.pending("u1")["parked"][0]["next_at"] + 0.1
    send = world.outbox.send
    calls = []

    async def broken(to: str, **kw: Any) -> Any:
        calls.append(to)
        raise RuntimeError("KafkaTimeoutError: the broker is away")

    world.outbox.send = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "cs_relay"):
        await timers.guarded(world.rt, "retry tick", lambda: retries.tick(world.rt))  # does not raise
        await timers.guarded(world.rt, "sweep", lambda: sweep.request_sweeps(world.rt))
    assert calls and "retry tick failed" in caplog.text and "sweep failed" in caplog.text
    assert world.rt.counters["timer_failed.retry tick"] == 1 and world.rt.counters["timer_failed.sweep"] == 1
    world.outbox.send = send  # type: ignore[method-assign]
    await retries.tick(world.rt)  # the next tick asks again at once, not after ANSWER_WAIT
    assert [r.key for r in world.controls(RetryDue.KIND)] == [b""]


async def test_guarded_lets_cancellation_through():
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await timers.guarded(World().rt, "x", cancelled)


# ------------------------------------------------------------------ bounded records and chunks


def test_retry_due_records_are_bounded_in_keys_and_bytes():
    keys = [f"user-{n:06d}-" + "x" * 40 for n in range(20_000)]
    records = control.retry_due_records(keys, max_keys=1000, max_bytes=16 * 1024)
    assert [k for r in records for k in r.keys] == keys
    for record in records:
        value, _ = control.encode(record)
        assert len(record.keys) <= 1000 and len(value) <= 16 * 1024
    assert control.retry_due_records([], max_keys=10, max_bytes=100) == []


async def test_a_tick_after_downtime_sends_several_bounded_retry_due_records():
    world = World()
    keys = users_of(world, 2, 3000)
    for key in keys:
        world.rt.parking.marks.retry_due_at[key] = world.now - 1
    await retries.tick(world.rt)
    due = world.controls(RetryDue.KIND)
    assert len(due) > 1 and all(r.partition == 2 for r in due)
    assert sorted(k for r in due for k in control.decode(r.headers, r.value).keys) == sorted(keys)
    assert max(len(r.value) for r in due) <= retries.RETRY_DUE_MAX_BYTES


class Turns:
    """Counts the turns of the event loop while `run` awaits something."""

    def __init__(self) -> None:
        self.count = 0

    async def _beat(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    async def run(self, work: Any) -> None:
        task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        try:
            await work
        finally:
            task.cancel()


async def test_the_retry_rescan_yields_to_the_loop_between_chunks(monkeypatch):
    world = World()
    for n in range(10 * retries.RESCAN_CHUNK):
        world.tables.pending[f"u{n}"] = {"v": 1, "next_seq": 1, "queues": {}}
    turns = Turns()
    seen_beats: list[int] = []
    index = world.rt.parking.index_retry
    monkeypatch.setattr(world.rt.parking, "index_retry", lambda k, p: (seen_beats.append(turns.count), index(k, p)))
    world.rt.assigned(set(range(PARTITIONS)))  # the rescan reads the partitions assigned here
    await turns.run(retries.tick(world.rt))
    assert len(seen_beats) == 10 * retries.RESCAN_CHUNK
    assert len(set(seen_beats)) >= 10  # the loop ran between chunks


async def test_the_sweep_works_in_chunks_each_record_sending_the_next(monkeypatch):
    monkeypatch.setattr(sweep, "SWEEP_CHUNK", 3)
    world = World(ENV)
    users = users_of(world, 1, 8)
    for user in users:
        await hold(world, user)
    world.now += 3601
    world.outbox.records.append(Produced(BY_USER, b"", *control.encode(Sweep()), 1))
    assert await world.settle()
    sweeps = [control.decode(r.headers, r.value) for r in world.controls(Sweep.KIND)]
    # 8 pending rows, then 16 seen rows (8 index rows, and the 8 packed rows that carried
    # them: each call was routed on a turn of its own), 3 at a time: each record carries
    # where to go on
    assert len(sweeps) == 3 + 6 and sweeps[0] == Sweep() and all(s != Sweep() for s in sweeps[1:])
    assert sorted(d.key.decode() for d in world.dead_letters()) == sorted(users)
    assert world.tables.pending == {} and world.tables.payloads == {} and world.tables.seen == {}


async def test_the_sweep_dead_letters_parked_deliveries_past_the_retry_window():
    world = World({"CS_RELAY_RETRY_WINDOW_SECONDS": "3600"}, client=FakeClient(answers=[503]))
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="First", messageId="t1")
    assert world.pending("u1")["parked"]
    world.now += 3601  # no retry ran, no retried record came
    await sweep.request_sweeps(world.rt)
    assert await world.settle()
    dead = world.dead_letters()
    assert [d.reason for d in dead] == ["retries_exhausted"] and dead[0].key == b"u1"
    assert dead[0].headers["cs-relay-destination"] == b"clientsuccess"
    assert world.tables.pending.get("u1") is None and "u1" not in world.rt.parking.marks.retry_due_at


def test_a_sweep_continuation_survives_encoding_and_the_first_is_as_before():
    assert control.encode(Sweep()) == (b"{}", {control.KIND_HEADER: b"sweep"})
    for record in (Sweep("pending", "user-7"), Sweep("seen"), Sweep("seen", "z")):
        value, headers = control.encode(record)
        assert control.decode(headers, value) == record


def test_items_of_partition_resumes_after_its_cursor_in_rocksdb(tmp_path):
    """The RocksDB path of the sweep's cursor (rocksdict, as Faust's store uses it)."""
    import rocksdict

    from streams.runtime.tablescan import items_of_partition

    db = rocksdict.Rdict(str(tmp_path / "db"))

    class Store:  # the parts of faust.stores.rocksdb.Store that items_of_partition uses
        use_rocksdict = True
        offset_key = b"__faust\x00offset__"
        _dbs = {3: db}

        def _visible_items(self, d: Any) -> Any:
            return ((k, v) for k, v in d.items() if k != self.offset_key)

        def _encode_key(self, key: str) -> bytes:
            return key.encode()

        def _decode_key(self, raw: bytes) -> str:
            return raw.decode()

        def _decode_value(self, raw: bytes) -> str:
            return raw.decode()

    class Table:
        data = Store()

    try:
        db[Store.offset_key] = b"7"
        for key in ("a", "b", "c", "d"):
            db[key.encode()] = key.upper().encode()
        everything = list(items_of_partition(Table(), 3, lambda k: 3))
        assert everything == [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
        assert list(items_of_partition(Table(), 3, lambda k: 3, after="b")) == [("c", "C"), ("d", "D")]
        assert list(items_of_partition(Table(), 3, lambda k: 3, after="bb")) == [("c", "C"), ("d", "D")]
        assert list(items_of_partition(Table(), 5, lambda k: 5)) == []  # not this worker's
    finally:
        db.close()


def faust_pending_table(tmp_path: Any, actives: set[int]) -> Any:
    """A real Faust table on RocksDB (rocksdict, a database per partition, as the worker
    opens them), with `actives` the partitions of its changelog assigned to this worker."""
    import faust

    app = faust.App(f"scan-{tmp_path.name}", datadir=str(tmp_path), store="rocksdb://")
    table = app.Table("pending", default=None)
    app.assignor._assignment.actives[table.changelog_topic_name] = set(actives)
    return table


def parked_row(next_at: float) -> dict[str, Any]:
    queue = {"held": [], "releasing": [], "parked": [[1, 1.0, 1, next_at]]}  # [seq, first failed, attempts, next]
    return {"v": 2, "next_seq": 2, "queues": {"clientsuccess": queue}}


async def test_the_retry_rescan_reads_a_large_rocksdb_table_a_chunk_per_turn_of_the_loop(tmp_path):
    """Issue 22, finding 5: the rescan listed every key of the table before its first
    yield (seconds of a stopped event loop at millions of rows). Each key is now read
    from the store in a chunk of at most RESCAN_CHUNK between two turns of the loop,
    once, and only from the partitions assigned here (a standby's database is open too)."""
    from streams.runtime.rowcache import CachedRows

    table = faust_pending_table(tmp_path, actives={0, 1})
    store = table.data
    world = World(tables=Tables(users={}, pending=CachedRows(table), groups={}, seen={}))
    rows = {p: users_of(world, p, 3 * retries.RESCAN_CHUNK + 7, prefix=f"p{p}-") for p in (0, 1, 2)}
    for partition, keys in rows.items():
        db = store._db_for_partition(partition)  # 2: a standby's, open here too
        for n, key in enumerate(keys):
            db.put(store._encode_key(key), store._encode_value(parked_row(world.now + n)))

    turns = Turns()
    reads: Counter[int] = Counter()  # keys read from the store, by turn of the loop
    decode = store._decode_key

    def counted(raw: Any) -> Any:
        reads[turns.count] += 1
        return decode(raw)

    store._decode_key = counted
    world.rt.assigned({0, 1})
    try:
        await turns.run(retries.tick(world.rt))
    finally:
        for db in store._dbs.values():
            db.close()
    ours = set(rows[0]) | set(rows[1])
    assert set(world.rt.parking.marks.retry_due_at) == ours  # the standby's users are not indexed
    assert sum(reads.values()) <= len(ours) + 2 * 8  # each key read once (a chunk's cursor again)
    assert max(reads.values()) <= retries.RESCAN_CHUNK + 1  # never more than a chunk per turn
    assert len(reads) >= len(ours) // retries.RESCAN_CHUNK
