"""streams.runtime.rowcache: decoded rows kept in memory, written through."""

from __future__ import annotations

import pytest

from streams.runtime.rowcache import CachedRows


class CountingTable(dict):
    """A table that counts its reads, and has what scans use (keys(), data)."""

    reads = 0
    data = "the store"

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def test_a_row_read_again_is_not_read_from_the_table_again():
    table = CountingTable(u1={"v": 1})
    rows = CachedRows(table, size=2)
    assert rows.get("u1") == {"v": 1} and rows.get("u1") == {"v": 1}
    assert table.reads == 1
    assert rows.get("nobody") is None and rows.get("nobody") is None and table.reads == 2  # absence kept too
    assert rows.get("nobody", "dflt") == "dflt" and "nobody" not in rows and "u1" in rows


def test_writes_go_to_the_table_and_the_cache_alike():
    table = CountingTable()
    rows = CachedRows(table)
    rows["u1"] = {"v": 2}
    assert table["u1"] == {"v": 2} and rows.get("u1") == {"v": 2} and table.reads == 0
    del rows["u1"]
    assert "u1" not in table and rows.get("u1") is None
    with pytest.raises(KeyError):
        rows["u1"]


def test_the_least_recently_used_rows_go_first_and_clear_forgets_all():
    table = CountingTable(a=1, b=2, c=3)
    rows = CachedRows(table, size=2)
    rows.get("a"), rows.get("b"), rows.get("a"), rows.get("c")  # b is the least recent
    reads = table.reads
    rows.get("a")
    assert table.reads == reads
    rows.get("b")
    assert table.reads == reads + 1
    table["a"] = 10  # changed behind the cache (recovery after an assignment)...
    rows.clear()  # ...which is why an assignment clears it
    assert rows.get("a") == 10


def test_anything_else_is_the_tables_own():
    table = CountingTable(a=1)
    rows = CachedRows(table)
    assert rows.data == "the store" and list(rows.keys()) == ["a"]


def test_a_row_is_decoded_once_per_version():
    table = CountingTable(u1={"n": 1})
    rows = CachedRows(table)
    made = []

    def read(row):
        made.append(row)
        return ("record", row["n"])

    assert rows.decoded("u1", read) == ("record", 1) and rows.decoded("u1", read) == ("record", 1)
    assert len(made) == 1
    rows["u1"] = {"n": 2}  # a new version
    assert rows.decoded("u1", read) == ("record", 2) and len(made) == 2


def test_the_rows_kept_are_bounded_by_bytes_as_well_as_by_count():
    big = {"traits": {"bio": "x" * 100_000}}  # a user with large traits: ~200 KB counted
    table = CountingTable({f"u{i}": big for i in range(100)})
    rows = CachedRows(table, size=4096, max_bytes=1_000_000)
    for i in range(100):
        rows.get(f"u{i}")
        assert rows.bytes <= rows.max_bytes
    assert 1 <= len(rows._rows) <= 5  # by bytes, far below the count
    assert rows.bytes == sum(entry[2] for entry in rows._rows.values())
    reads = table.reads
    rows.get("u99")  # the newest is kept
    assert table.reads == reads


def test_a_row_larger_than_the_whole_bound_is_read_and_written_but_not_kept():
    table = CountingTable()
    rows = CachedRows(table, max_bytes=10_000)
    rows.put("huge", {"bio": "y" * 20_000}, decoded="record")
    assert table["huge"] == {"bio": "y" * 20_000} and rows.bytes == 0 and not rows._rows
    assert rows.decoded("huge", lambda row: len(row["bio"])) == 20_000
    rows["small"] = {"v": 1}
    assert rows.bytes > 0
    del rows["small"]
    assert rows.bytes == 0


def test_a_dedupe_row_written_to_the_store_alone_is_not_kept_and_pushes_no_row_out():
    """`put_local` (a new id's dedupe row, one an event) goes to the table, not to the
    LRU: the users' rows kept stay kept; `get_local` finds it in the table."""
    table = CountingTable(u1=None)
    rows = CachedRows(table, size=2)
    assert rows.get("u1") is None and table.reads == 1  # a user with no row of an older version
    for n in range(5):
        rows.put_local(0, f"id{n}", [n, 1.0])
        assert rows.get_local(0, f"id{n}") == [n, 1.0]
    assert table["id4"] == [4, 1.0] and len(rows._rows) == 1
    assert rows.get("u1") is None and table.reads == 6  # still kept: read once
    rows.get("u1")
    rows.put_local(0, "u1", [9, 2.0])  # a row written over one kept: the kept one goes
    assert rows.get("u1") == [9, 2.0]
