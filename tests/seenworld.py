"""The `seen` table as a worker has it, for the tests of packed dedupe rows
(tests/test_runtime_seenpacks.py, tests/test_runtime_seenrestore.py): a store whose
rows a worker writes alone or through the changelog, the changelog kept, and what a
fresh worker's table holds once it has read it."""

from __future__ import annotations

import asyncio
import itertools
import json
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams.core import seenpack
from streams.runtime import seentable
from streams.runtime.runtime import Tables
from tests.runtime_world import INPUT, World

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
    table = fresh_table()
    table.apply_changelog_batch(changelog_events(records))
    return dict(table.data.data)


def fresh_table() -> seentable.SeenTable:
    """A new worker's `seen` table (Faust's in-memory store)."""
    app = faust.App(f"seen-test-{next(_apps)}", store="memory://")
    return seentable.seen_table(app, "seen", {})


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
        await world.intake(record)
    await world.settle()


def users_in(world: World, partition: int, n: int) -> list[str]:
    return [u for u in (f"user-{i}" for i in range(1000)) if world.rt.partition_of(u) == partition][:n]


def packed(records: list[tuple[int | None, str, Any]]) -> list[tuple[int | None, str, Any]]:
    return [r for r in records if seenpack.is_pack_key(r[1])]


def tracks(users: list[str], tag: str = "t") -> list[dict[str, Any]]:
    return [{"type": "track", "userId": u, "event": "E", "messageId": f"{tag}-{u}"} for u in users]


async def restarted(before: World, seen: dict[str, Any]) -> World:
    """A fresh worker over what `before` made durable: its tables, `seen` restored from
    the changelog; the topics' offsets go on where they were."""
    t = before.tables
    after = seen_world(StoreTable(seen))
    for name in ("users", "pending", "groups", "payloads"):
        getattr(after.tables, name).update(getattr(t, name))
    after.offsets = before.offsets.copy()
    return after
