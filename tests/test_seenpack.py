"""Packed dedupe rows (streams.core.seenpack): packing a partition's new dedupe entries
into one row, expanding a packed row back into the index rows lookups read, and the
bound every packed row stays below."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core import dedupe, seenpack
from streams.core.idlimits import MAX_ID_BYTES
from streams.core.seenpack import Packer
from streams.core.validation import MAX_MESSAGE_ID_LENGTH

DAY = 24 * 3600.0


def test_a_packed_row_expands_into_the_index_rows_lookups_read():
    packer = Packer()
    packer.add(dedupe.row_key("u1", "m1"), 7, 100.0)
    packer.add(dedupe.row_key("u2", "dlq/0/3", replay=True), 9, 101.5)
    rows = dict(seenpack.expand(packer.value()))
    assert rows == {
        dedupe.row_key("u1", "m1"): seenpack.index_row(7, 100.0),
        dedupe.row_key("u2", "dlq/0/3", replay=True): seenpack.index_row(9, 101.5),
    }
    # An index row is read as the one-row-per-id rows are: offset, then time.
    assert dedupe.classify_row(rows[dedupe.row_key("u1", "m1")], 8, 200.0, DAY) is dedupe.Verdict.DUPLICATE
    assert dedupe.classify_row(rows[dedupe.row_key("u1", "m1")], 7, 200.0, DAY) is dedupe.Verdict.REDELIVERED


def test_index_rows_say_they_live_in_a_packed_row_and_older_rows_do_not():
    assert seenpack.is_packed_index(seenpack.index_row(1, 2.0))
    assert not seenpack.is_packed_index(dedupe.row(1, 2.0))  # an older worker's row, with its own changelog record


def test_pack_keys_name_their_partition_and_sort_after_every_index_row():
    key = seenpack.pack_key(5, "a1b2c3.1234")
    assert seenpack.is_pack_key(key) and not dedupe.is_row_key(key)
    assert seenpack.partition_of_pack(key) == 5
    assert key > dedupe.row_key("\U0010ffff" * 10, "\U0010ffff")  # the sweep reads index rows first


def test_a_packed_row_is_expired_once_its_newest_entry_is():
    packer = Packer()
    packer.add(dedupe.row_key("u1", "m1"), 1, 100.0)
    packer.add(dedupe.row_key("u1", "m2"), 2, 105.0)
    value = packer.value()
    assert not seenpack.pack_expired(value, 100.0 + DAY + 1, DAY)
    assert seenpack.pack_expired(value, 105.0 + DAY + 1, DAY)


def test_the_summary_a_store_keeps_expires_with_the_row():
    packer = Packer()
    packer.add(dedupe.row_key("u1", "m1"), 1, 100.0)
    packer.add(dedupe.row_key("u1", "m2"), 2, 105.0)
    summary = seenpack.summary_of(packer.value())
    assert summary == packer.summary() == {"v": seenpack.PACK_VERSION, "newest": 105.0, "n": 2}
    assert not seenpack.pack_expired(summary, 105.0 + DAY, DAY)
    assert seenpack.pack_expired(summary, 105.0 + DAY + 1, DAY)


def test_a_packer_is_full_at_its_entry_count():
    packer = Packer(max_entries=3)
    for n in range(3):
        assert not packer.full
        packer.add(dedupe.row_key("u", f"m{n}"), n, 1.0)
    assert packer.full and len(packer) == 3


def test_try_add_takes_no_entry_past_the_bytes_but_an_empty_packer_takes_any():
    packer = Packer(max_bytes=100)
    assert packer.try_add(dedupe.row_key("u" * 200, "m"), 1, 1.0)  # alone in its row
    assert not packer.try_add(dedupe.row_key("u", "m"), 2, 1.0) and len(packer) == 1


def test_a_packer_refuses_an_entry_that_would_take_it_past_its_bytes():
    packer = Packer(max_bytes=300)
    added = 0
    while packer.fits(dedupe.row_key("u", f"m{added:04d}")):
        packer.add(dedupe.row_key("u", f"m{added:04d}"), added, 1.0)
        added += 1
    assert added > 1
    assert len(json.dumps(packer.value()).encode()) <= 300
    assert seenpack.encoded_size(packer.value()) <= 300


def test_a_newer_packed_row_is_refused():
    with pytest.raises(ValueError, match="newer"):
        seenpack.expand({"v": seenpack.PACK_VERSION + 1, "e": []})


def test_the_largest_entry_fits_many_times_in_a_packed_row():
    """The worst entry: the longest user id (MAX_ID_BYTES of control characters, each
    escaped to six bytes in JSON), the longest messageId (of characters escaped to twelve),
    the largest numbers."""
    worst_user = "\x01" * MAX_ID_BYTES
    worst_id = "\U0001f600" * MAX_MESSAGE_ID_LENGTH  # twelve bytes each, escaped
    packer = Packer()
    n = 0
    while packer.fits(dedupe.row_key(worst_user, worst_id)) and not packer.full:
        packer.add(dedupe.row_key(worst_user, worst_id), (1 << 63) - 1, 9_999_999_999.999)
        n += 1
    assert n >= 20
    assert len(json.dumps(packer.value()).encode()) <= seenpack.MAX_PACK_BYTES < 1024 * 1024


ids = st.text(min_size=1, max_size=40)


@given(st.lists(st.tuples(ids, ids, st.booleans(), st.integers(0, (1 << 63) - 1)), min_size=1, max_size=60))
def test_what_is_packed_is_what_expands_and_the_bound_holds(entries):
    packer = Packer(max_bytes=2048, max_entries=25)
    kept = {}
    for user, ident, replay, offset in entries:
        key = dedupe.row_key(user, ident, replay=replay)
        if packer.full or not packer.fits(key):
            break
        packer.add(key, offset, 1.5)
        kept[key] = seenpack.index_row(offset, 1.5)
    value = json.loads(json.dumps(packer.value()))  # as the changelog gives it back
    assert dict(seenpack.expand(value)) == kept
    assert len(json.dumps(packer.value()).encode()) <= 2048
