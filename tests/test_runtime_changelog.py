"""Commit only what is durable, through the real runtime without a broker: an event is
acknowledged (and so may be committed) only once Kafka has acknowledged the changelog
writes it made, and a write Kafka refuses stops the worker instead of being committed
past. The tables stand in for Faust's: every `__setitem__` and `del` goes through
`send_changelog`, which returns the write's future, as Faust's does."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.runtime.runtime import Tables
from tests.runtime_world import BY_USER_TOPIC, World


class ChangelogTable(dict):
    """A table whose changelog writes wait for the test to acknowledge them."""

    def __init__(self, writes: list[asyncio.Future]) -> None:
        super().__init__()
        self.writes = writes

    def send_changelog(self, key: Any, value: Any) -> asyncio.Future:
        written: asyncio.Future = asyncio.get_running_loop().create_future()
        self.writes.append(written)
        return written

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.send_changelog(key, value)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.send_changelog(key, None)

    def write_packed(self, partition: int, key: Any, value: Any) -> asyncio.Future:
        """A packed dedupe row, as the seen table writes one: the write's future returned
        (the events that joined the row wait for it)."""
        super().__setitem__(key, value)
        return self.send_changelog(key, value)


def changelog_world() -> tuple[World, list[asyncio.Future]]:
    writes: list[asyncio.Future] = []
    tables = Tables(*(ChangelogTable(writes) for _ in range(5)))
    world = World(tables=tables)
    for table in (tables.users, tables.pending, tables.groups, tables.seen, tables.windows):
        world.rt.changelog.watch(table)
    return world, writes


def routed_acks(world: World) -> list[int]:
    return [offset for topic, _, offset in world.acked if topic == BY_USER_TOPIC]


async def test_an_event_is_acknowledged_only_once_its_changelog_writes_are():
    world, writes = changelog_world()
    # No group yet: the track is held, its only effect a table write (pending, dedupe).
    await world.publish(type="track", userId="u1", event="Early", messageId="t1")
    assert writes and routed_acks(world) == []
    for written in writes[:-1]:
        written.set_result(None)
    await world.settle()
    assert routed_acks(world) == []  # one write still in transit
    writes[-1].set_result(None)
    assert await world.settle()
    assert routed_acks(world) == [0]


async def test_a_changelog_write_kafka_refuses_stops_the_worker():
    world, writes = changelog_world()
    stopped: list[BaseException] = []
    world.rt.stop = stopped.append
    await world.publish(type="identify", userId="u1", traits={"email": "a@b.example"}, messageId="i1")
    for written in writes:
        written.set_exception(RuntimeError("MessageSizeTooLargeError"))
    await world.settle()
    assert routed_acks(world) == []
    assert len(stopped) == 1 and world.rt.failure is not None and "MessageSizeTooLarge" in world.rt.failure


async def test_a_users_record_is_written_only_when_it_changed():
    """Every write is a changelog record: a call that changes nothing but the time the
    user was last seen does not rewrite the record (last_seen moves once a minute)."""
    world, writes = changelog_world()
    users_written: list[str] = []
    original = world.tables.users.send_changelog

    def counted(key, value):
        users_written.append(key)
        return original(key, value)

    world.tables.users.send_changelog = counted  # type: ignore[attr-defined]

    async def track(n: int) -> None:
        await world.publish(type="track", userId="u1", event=f"E{n}", messageId=f"t{n}")
        for written in writes:
            if not written.done():
                written.set_result(None)
        assert await world.settle()

    await track(1)
    assert users_written == ["u1"]  # the new user
    world.now += 30
    await track(2)
    assert users_written == ["u1"]  # nothing changed but the time
    world.now += 31
    await track(3)
    assert users_written == ["u1", "u1"] and world.tables.users["u1"]["last_seen"].startswith("2023-11-14T22:14")


TABLE_NAMES = [f.name for f in dataclasses.fields(Tables)]


class HeldTable(ChangelogTable):
    """One table's changelog writes wait for the test; the other tables' are acknowledged at once."""

    def __init__(self, writes: list[asyncio.Future], held: bool) -> None:
        super().__init__(writes if held else [])
        self.held = held

    def send_changelog(self, key: Any, value: Any) -> asyncio.Future:
        written = super().send_changelog(key, value)
        if not self.held:
            written.set_result(None)
        return written


@pytest.mark.parametrize("table", TABLE_NAMES)
async def test_no_event_is_acknowledged_before_its_writes_to_any_table_are_durable(tmp_path, table: str):
    """Every table, a user's waiting events' payload rows and a group's waiters included:
    a call held while its group is unknown (users, pending, payloads, seen; the group's
    waiters), the group call (groups) that releases it, a call counted in an
    aggregation window (windows), a call past its user's share (spill, spillrows). While
    Kafka has not acknowledged the writes to `table`, the events that made them, and
    every later one of their partitions, stay unacknowledged."""
    mappings = tmp_path / "mappings.toml"
    mappings.write_text('[clientsuccess]\naggregate = "1h"\n')
    writes: list[asyncio.Future] = []
    tables = Tables(**{name: HeldTable(writes, held=name == table) for name in TABLE_NAMES})
    # Spilling needs calls sent one by one: the aggregating mapping only where it writes.
    env = {"CS_RELAY_USER_SHARE": "1"} if table.startswith("spill") else {"CS_RELAY_MAPPINGS": str(mappings)}
    world = World(env, tables=tables)
    for name in TABLE_NAMES:
        world.rt.changelog.watch(getattr(tables, name))

    await world.publish(type="track", userId="u1", event="Early", context={"groupId": "g1"}, messageId="t1")
    await world.publish(type="group", userId="u1", groupId="g1", traits={"name": "Acme"}, messageId="g")
    await world.publish(type="track", userId="u1", event="Counted", messageId="t2")
    world.client.gate = asyncio.Event()  # the first page waits: the second is spilled
    await world.publish(type="page", userId="u1", name="One", messageId="p1")
    await world.publish(type="page", userId="u1", name="Two", messageId="p2")
    world.client.gate.set()
    await world.settle()
    assert writes, f"the calls wrote nothing to {table}"
    assert world.rt.acks.in_flight > 0  # the events that wrote to it, and those after them
    for written in writes:
        written.set_result(None)
    assert await world.settle()
    assert world.rt.acks.in_flight == 0


WATCHED = """
import json
from streams.runtime import app
print(json.dumps({t.name: t.send_changelog.__qualname__ for t in app.app.tables.values()}))
"""


def test_the_worker_awaits_the_changelog_writes_of_every_one_of_its_tables(tmp_path):
    """The wiring behind the test above: every table of the Faust app, payloads and
    waiters included, has its changelog writes collected for the event that made them."""
    repo = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "CS_RELAY_DATA_DIR": str(tmp_path), "PYTHONPATH": str(repo)}
    probe = [sys.executable, "-c", WATCHED]
    done = subprocess.run(probe, env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    watched = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(watched) == sorted(TABLE_NAMES)
    assert all(name.startswith("ChangelogWrites.watch.") for name in watched.values()), watched
