"""What `cs-relay backfill` remembers (streams.core.backfilled) and how it reads its
options (times, batches as ranges)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.backfilled import MAX_BYTES, MAX_RANGES, Done, RecordFull, key, parse_key
from streams.ops.backfill import _runs, parse_time


def test_ranges_merge_and_answer_membership():
    done = Done().add(10, 20).add(30, 40).add(20, 30)
    assert done.ranges == ((10, 40),)
    assert 10 in done and 39 in done and 40 not in done and 9 not in done
    done = done.add(50, 60).add(45, 46)
    assert done.ranges == ((10, 40), (45, 46), (50, 60))
    assert done.gaps(0, 70) == 70 - 30 - 1 - 10
    assert Done.from_bytes(done.to_bytes()) == done
    assert Done.from_bytes(None) == Done() and Done().add(5, 5) == Done()


def test_the_record_is_bounded_and_refuses_more_spans():
    done = Done()
    for i in range(MAX_RANGES):
        done = done.add(2**62 + 3 * i, 2**62 + 3 * i + 1)
    assert len(done.to_bytes()) < MAX_BYTES
    with pytest.raises(RecordFull):
        done.add(0, 1)
    assert done.add(2**62, 2**62 + 4).ranges[0] == (2**62, 2**62 + 4)  # joining spans is still accepted


def test_an_unknown_version_is_refused_not_misread():
    with pytest.raises(ValueError, match="unknown version"):
        Done.from_bytes(b'{"v": 9, "ranges": []}')


def test_keys_name_destination_topic_and_partition():
    assert parse_key(key("clientsuccess", "segment-events", 7)) == ("clientsuccess", "segment-events", 7)
    assert parse_key(b"garbage") is None


def test_a_batch_becomes_the_ranges_of_its_handled_records():
    assert _runs([5, 6, 7, 9, 10], set()) == [(5, 11)]  # Kafka may skip an offset: one run still
    assert _runs([5, 6, 7, 9, 10], {7}) == [(5, 7), (9, 11)]
    assert _runs([5, 6], {5, 6}) == []


def test_times():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_time("24h", now) == datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert parse_time("90m", now) == datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
    assert parse_time("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T08:00:00Z", now) == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now)
