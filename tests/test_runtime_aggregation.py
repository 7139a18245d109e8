"""Windowed aggregation in the real runtime (dict tables, a fake ClientSuccess): calls are
counted in the user's window, the tick past the window's end sends exactly one request
per event with the window's sum, a redone close or a redone call sends nothing more,
and a window closed while no worker owned it is sent after recovery."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core import control
from streams.core.control import WindowClose
from streams.runtime import aggregation, retries
from streams.runtime.runtime import Tables
from tests.runtime_world import FakeClient, World

HOUR = 3600


def world(tmp_path, tables: Tables | None = None, client: FakeClient | None = None) -> World:
    path = tmp_path / "mappings.toml"
    path.write_text('[clientsuccess]\naggregate = "1h"\n')
    w = World({"CS_RELAY_MAPPINGS": str(path)}, tables=tables, client=client)
    w.now = datetime(2026, 11, 30, 10, 15, tzinfo=UTC).timestamp()
    return w


def fresh_tables() -> Tables:
    return Tables(users={}, pending={}, groups={}, seen={}, windows={})


async def calls(w: World, user: str = "u1") -> None:
    await w.publish(type="group", userId=user, groupId="g1", traits={"name": "Acme"}, messageId=f"{user}-g")
    for n, value in enumerate((2, 3, None, 4.5)):
        props = {} if value is None else {"value": value}
        await w.publish(type="track", userId=user, event="Export", properties=props, messageId=f"{user}-e{n}")
        w.now += 60
    await w.publish(type="track", userId=user, event="Import", messageId=f"{user}-i")


def sent(client: FakeClient) -> dict[str, tuple[float, str]]:
    return {r.path.rsplit("/", 1)[-1]: (r.json["value"], r.json["timestamp"]) for r in client.requests}


async def test_one_request_per_event_with_the_window_sum_when_the_window_closes(tmp_path):
    w = world(tmp_path, fresh_tables())
    await calls(w)
    assert w.client.requests == []  # nothing before the window closes
    assert w.rt.counters["aggregated.clientsuccess"] == 5

    await aggregation.tick(w.rt)  # not yet
    assert w.controls(WindowClose.KIND) == []
    w.now = datetime(2026, 11, 30, 11, 0, 0, tzinfo=UTC).timestamp()
    await aggregation.tick(w.rt)
    assert await w.settle()
    assert sent(w.client) == {"Export": (10.5, "2026-11-30T10:00:00Z"), "Import": (1, "2026-11-30T10:00:00Z")}
    assert len(w.client.requests) == 2
    assert len(w.controls(b"window-done")) == 2
    assert w.tables.windows["u1"]["windows"] == {}

    # the same close again (a redo after a crash before the commit): the windows are gone
    value, headers = control.encode(WindowClose(("u1",)))
    w.outbox.records.append(type(w.outbox.records[0])("by-user", b"", value, headers, w.rt.partition_of("u1")))
    assert await w.settle()
    await aggregation.tick(w.rt)
    assert await w.settle()
    assert len(w.client.requests) == 2


async def test_a_call_processed_again_after_a_crash_is_not_counted_twice(tmp_path):
    tables = fresh_tables()
    w = world(tmp_path, tables)
    await calls(w)
    # the crash: the by-user records of the tracks are read again from the committed
    # offset by a new worker with the same tables (their messageIds pass `seen`: same offsets)
    redo = world(tmp_path, tables)
    redo.now = w.now
    redo.rt.assigned({0, 1, 2, 3})
    by_user = [r for r in w.outbox.records if r.to == "by-user" and r.kind is None]
    offsets = dict(w.offsets)
    redo.offsets.update({k: 0 for k in offsets})
    for record in by_user:  # the same records at the same offsets
        incoming = redo._incoming("cs-relay-by-user", record.key, record.value, record.headers, w.rt.partition_of("u1"))
        redo.route(incoming)
    assert await redo.settle()
    redo.now = datetime(2026, 11, 30, 11, 0, 0, tzinfo=UTC).timestamp()
    await aggregation.tick(redo.rt)  # the rescan after the assignment finds the windows
    assert await redo.settle()
    assert sent(redo.client) == {"Export": (10.5, "2026-11-30T10:00:00Z"), "Import": (1, "2026-11-30T10:00:00Z")}


async def test_a_window_closed_while_its_worker_was_down_is_sent_after_recovery(tmp_path):
    tables = fresh_tables()
    w = world(tmp_path, tables)
    await calls(w)
    # the worker stops; hours later another takes the partitions over, tables restored
    later = world(tmp_path, tables)
    later.now = datetime(2026, 11, 30, 14, 0, 0, tzinfo=UTC).timestamp()
    await aggregation.tick(later.rt)
    assert later.controls(WindowClose.KIND) == []  # no assignment yet: nothing indexed
    later.rt.assigned({0, 1, 2, 3})
    await aggregation.tick(later.rt)
    assert await later.settle()
    assert sent(later.client) == {"Export": (10.5, "2026-11-30T10:00:00Z"), "Import": (1, "2026-11-30T10:00:00Z")}


async def test_a_failing_window_request_is_parked_and_retried_like_any_delivery(tmp_path):
    w = world(tmp_path, fresh_tables(), client=FakeClient(answers=[503]))
    await w.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await w.publish(type="track", userId="u1", event="Export", properties={"value": 2}, messageId="e1")
    await w.publish(type="track", userId="u1", event="Export", properties={"value": 2}, messageId="e2")
    w.now += HOUR
    await aggregation.tick(w.rt)
    assert await w.settle()
    assert w.pending("u1")["parked"][0]["request"]["json"]["value"] == 4
    assert w.tables.windows["u1"]["windows"] == {}  # the parked delivery carries it now
    w.now += 3600
    await retries.tick(w.rt)
    assert await w.settle()
    assert [r.json["value"] for r in w.client.requests] == [4, 4]
    assert w.pending("u1") == {}


async def test_the_rescan_reads_only_the_partitions_assigned_to_this_worker(tmp_path):
    """The store holds rows of every partition whose database is open here, those this
    worker keeps as a standby included: their windows are the active owner's to close."""
    tables = fresh_tables()
    w = world(tmp_path, tables)
    users: dict[int, str] = {}
    n = 0
    while len(users) < 4:
        users.setdefault(w.rt.partition_of(f"u{n}"), f"u{n}")
        n += 1
    for user in users.values():
        await calls(w, user)
    assert {w.rt.partition_of(k) for k in tables.windows} == {0, 1, 2, 3}
    later = world(tmp_path, tables)
    later.now = datetime(2026, 11, 30, 14, 0, 0, tzinfo=UTC).timestamp()
    later.rt.assigned({1, 3})  # 0 and 2 are standbys here
    await aggregation.tick(later.rt)
    closes = later.controls(WindowClose.KIND)
    asked = {k for r in closes for k in control.decode(r.headers, r.value).keys}
    assert asked == {users[1], users[3]}
    assert {r.partition for r in closes} == {1, 3}
