"""streams.runtime.grouptable on Faust's RocksDB store (real databases, no broker): the
groups' rows read through `cached` are read from the store once, and read again once
the table says they changed: a changelog batch applied (another worker's write, a
recovery), a tombstone, a rebalance; and the `GroupState` decoded from a row is kept
with it (`GroupView.stored`) as long."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from streams.core.state import GroupState
from streams.runtime import grouptable
from streams.runtime.groupview import GroupView

CHANGELOG = "app-groups-changelog"


def rocksdb_table(tmp_path: Any) -> grouptable.GroupsTable:
    app = faust.App("groups-rocksdb-test", store="rocksdb://", datadir=str(tmp_path))
    return grouptable.groups_table(app, "groups", {})


def changelog_event(table: grouptable.GroupsTable, partition: int, offset: int, key: str, value: Any) -> Any:
    """A changelog record as recovery and the standby reader hand it to the table."""
    store: Any = table.data
    raw_value = None if value is None else store._encode_value(value)
    message = SimpleNamespace(
        tp=TP(CHANGELOG, partition), partition=partition, offset=offset, key=store._encode_key(key), value=raw_value
    )
    return SimpleNamespace(key=key, value=value, message=message)


def counting_store_reads(table: grouptable.GroupsTable) -> list[bytes]:
    store: Any = table.data
    reads: list[bytes] = []
    get, contains = store._get, store._contains

    def counted_get(key: bytes) -> Any:
        reads.append(key)
        return get(key)

    def counted_contains(key: bytes) -> bool:
        reads.append(key)
        return contains(key)

    store._get, store._contains = counted_get, counted_contains
    return reads


ACME = {"group_id": "g1", "name": "Acme"}


async def test_a_group_is_read_from_the_store_once_until_its_row_changes(tmp_path):
    table = rocksdb_table(tmp_path)
    rows = grouptable.cached(table)
    table.apply_changelog_batch([changelog_event(table, 0, 1, "g1", ACME)])
    reads = counting_store_reads(table)
    assert rows.get("g1") == ACME
    first = len(reads)
    assert first > 0
    for _ in range(3):
        assert rows.get("g1") == ACME
    assert len(reads) == first  # kept

    # Another worker's write of the group, read from the changelog.
    table.apply_changelog_batch([changelog_event(table, 0, 2, "g1", {**ACME, "name": "Acme Inc"})])
    assert rows.get("g1") == {**ACME, "name": "Acme Inc"} and len(reads) > first

    # A write of another group leaves this one kept.
    kept = len(reads)
    table.apply_changelog_batch([changelog_event(table, 1, 3, "g2", {"group_id": "g2", "name": "Beta"})])
    assert rows.get("g1")["name"] == "Acme Inc" and len(reads) == kept
    assert rows.get("g2")["name"] == "Beta"

    # A tombstone; and a group not known is known once written.
    table.apply_changelog_batch([changelog_event(table, 0, 4, "g1", None)])
    assert rows.get("g1") is None
    assert rows.get("g3") is None
    table.apply_changelog_batch([changelog_event(table, 2, 5, "g3", {"group_id": "g3", "name": "Gamma"})])
    assert rows.get("g3")["name"] == "Gamma"


async def test_a_rebalance_forgets_every_row_kept(tmp_path):
    table = rocksdb_table(tmp_path)
    rows = grouptable.cached(table)
    table.apply_changelog_batch([changelog_event(table, 0, 1, "g1", ACME)])
    assert rows.get("g1") == ACME
    reads = counting_store_reads(table)
    await table.on_rebalance(set(), set(), set(), 1)
    assert rows.get("g1") == ACME and reads  # read again: recovery may have replaced it


def test_a_row_written_through_the_cache_is_the_one_read(tmp_path):
    table = rocksdb_table(tmp_path)
    rows = grouptable.cached(table)
    assert rows.get("g1") is None  # not known yet: kept as such
    written: list[tuple[Any, Any]] = []

    def send_changelog(partition: Any, key: Any, value: Any) -> Any:
        written.append((key, value))
        return SimpleNamespace(message=SimpleNamespace(partition=0))

    patched: Any = table
    patched.send_changelog = send_changelog
    patched.partition_for_key = lambda key: 0
    patched.data._set = lambda key, value: None  # the store of an event's partition (no event in this test)
    rows["g1"] = ACME
    assert written == [("g1", ACME)] and rows.get("g1") == ACME


def test_the_group_a_read_decodes_is_kept_with_its_row_until_the_row_changes(tmp_path, monkeypatch):
    table = rocksdb_table(tmp_path)
    view = GroupView(grouptable.cached(table))
    table.apply_changelog_batch([changelog_event(table, 0, 1, "g1", ACME)])
    decoded: list[str] = []
    from_dict = GroupState.from_dict.__func__  # type: ignore[attr-defined]

    def counted(cls: type[GroupState], data: Any) -> GroupState:
        decoded.append(data["group_id"])
        return from_dict(cls, data)

    monkeypatch.setattr(GroupState, "from_dict", classmethod(counted))
    first = view.get("g1")
    assert first is not None and first.name == "Acme" and decoded == ["g1"]
    assert view.get("g1") is first and view.of(None)("g1") is first and decoded == ["g1"]  # not decoded again

    # Another worker's write of the group: decoded once more, then kept again.
    table.apply_changelog_batch([changelog_event(table, 0, 2, "g1", {**ACME, "name": "Acme Inc"})])
    second = view.get("g1")
    assert second is not None and second.name == "Acme Inc" and decoded == ["g1", "g1"]
    assert view.get("g1") is second and decoded == ["g1", "g1"]
    table.apply_changelog_batch([changelog_event(table, 0, 3, "g1", None)])
    assert view.get("g1") is None
