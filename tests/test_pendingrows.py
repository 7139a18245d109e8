"""A user's pending record stored as an index row and a payload row per waiting event
(streams.core.pendingrows): what each row holds, what a write changes, and the bound on
the index row."""

from __future__ import annotations

import json
from dataclasses import replace

from streams.core import pendingrows
from streams.core.pending import Item, Parked, Pending, Queue, confirm, hold, park, release
from streams.core.pendingrows import INDEX_MAX_BYTES, changes, index_row, max_events_within, read, worst_index_bytes
from streams.core.positions import INPUT_BASE
from streams.destinations import REGISTRY
from tests.coretools import user_of_payload_key

RAW = json.dumps({"type": "track", "userId": "u1", "event": "E", "properties": {"x": "y" * 500}})
SOURCE = {"topic": "in", "partition": 3, "offset": 17}


def parked(seq: int, error: str = "503") -> Parked:
    return Parked(
        seq, RAW, SOURCE, {"method": "POST", "url": "https://x/y", "body": {"a": 1}}, f"m{seq}", 10.5, 2, 99.25, error
    )


def stored(pending: Pending) -> tuple[dict, dict]:
    """The rows a write from nothing makes."""
    put, gone = changes(Pending(), pending)
    assert gone == []
    return index_row(pending), put


def joined(index: dict, payloads: dict) -> tuple[Pending, list]:
    return read(json.loads(json.dumps(index)), lambda dest, seq: payloads.get((dest, seq)))


def test_rows_join_back_into_the_same_record():
    p, _ = hold(Pending(), "cs", RAW, SOURCE, now=1.5, max_events=10, seq=1 << 20)
    p, _ = hold(p, "cs", RAW, SOURCE, now=2.5, max_events=10, seq=2 << 20)
    p, _ = release(p, "cs", 1)
    p = park(p, "csb", parked(0), seq=3 << 20)
    index, payloads = stored(p)
    back, missing = joined(index, payloads)
    assert missing == [] and back == p


def test_the_index_row_holds_no_event_body():
    p = park(Pending(), "csb", parked(0, error="e" * 400), seq=5)
    p, _ = hold(p, "cs", RAW, SOURCE, now=1.0, max_events=10, seq=6)
    text = json.dumps(index_row(p))
    assert "yyyy" not in text and "eeee" not in text and "https://x/y" not in text
    assert len(text) < 200


def test_a_write_puts_only_the_new_event_and_deletes_only_what_left():
    before, _ = hold(Pending(), "cs", RAW, SOURCE, now=1.0, max_events=100, seq=1)
    for seq in range(2, 50):
        before, _ = hold(before, "cs", RAW, SOURCE, now=1.0, max_events=100, seq=seq)
    after, _ = hold(before, "cs", RAW, SOURCE, now=2.0, max_events=100, seq=50)
    put, gone = changes(before, after)
    assert list(put) == [("cs", 50)] and gone == []

    released, _ = release(after, "cs", 3)
    assert changes(after, released) == ({}, [])  # held -> releasing: the body is the same
    done = confirm(confirm(released, "cs", 1), "cs", 2)
    assert changes(released, done) == ({}, [("cs", 1), ("cs", 2)])


def test_a_released_event_that_parks_rewrites_its_row_with_the_request():
    p, _ = hold(Pending(), "cs", RAW, SOURCE, now=1.0, max_events=10, seq=7)
    p, _ = release(p, "cs", 1)
    after = park(p, "cs", parked(0), released_seq=7)
    put, gone = changes(p, after)
    assert gone == [] and list(put) == [("cs", 7)] and put[("cs", 7)]["request"]["url"] == "https://x/y"


def test_a_retry_changes_the_head_row_only_for_its_error():
    p = park(Pending(), "cs", parked(0), seq=1)
    p = park(p, "cs", parked(0), seq=2)
    head = p.queue("cs").parked[0]
    later = p.with_queue(
        "cs", replace(p.queue("cs"), parked=(replace(head, attempts=5, last_error="timeout"), p.queue("cs").parked[1]))
    )
    put, gone = changes(p, later)
    assert gone == [] and list(put) == [("cs", 1)] and put[("cs", 1)]["last_error"] == "timeout"


def test_an_event_without_its_payload_row_is_left_out_and_named():
    p, _ = hold(Pending(), "cs", RAW, SOURCE, now=1.0, max_events=10, seq=1)
    p, _ = hold(p, "cs", RAW, SOURCE, now=1.0, max_events=10, seq=2)
    index, payloads = stored(p)
    del payloads[("cs", 1)]
    back, missing = joined(index, payloads)
    assert missing == [("cs", 1)] and [i.seq for i in back.queue("cs").held] == [2]


def test_a_version_1_record_is_read_whole():
    p, _ = hold(Pending(), "cs", RAW, SOURCE, now=1.0, max_events=10, seq=1)
    back, missing = read(p.to_dict(), lambda dest, seq: None)
    assert back == p and missing == []
    assert pendingrows.index_only(p.to_dict()) == p


def test_a_newer_index_row_is_refused():
    try:
        read({"v": pendingrows.INDEX_VERSION + 1, "queues": {}}, lambda d, s: None)
    except ValueError as exc:
        assert "newer" in str(exc)
    else:
        raise AssertionError("a newer record was read")


def test_the_largest_index_row_stays_below_its_bound():
    """With every registered destination (the real registry, not a constant) at the
    largest CS_RELAY_PENDING_MAX_EVENTS start-up accepts, each with as many held,
    releasing and parked events as it allows, sequence numbers and times at their
    longest, the index row stays below INDEX_MAX_BYTES (and so below the changelog
    topics' max.message.bytes); `worst_index_bytes` is that row's size exactly."""
    keys = [p.key for p in REGISTRY]
    n, big, t = max_events_within(keys), (1 << 63) - 1, 9_999_999_999.999
    assert n >= 1000  # the default CS_RELAY_PENDING_MAX_EVENTS fits
    queue = Queue(
        tuple(Item(big - i, t, RAW) for i in range(n)),
        tuple(Item(big - n - i, t, RAW) for i in range(n)),
        tuple(replace_times(parked(big - 2 * n - i), t) for i in range(n)),
    )
    row = index_row(Pending(big, {key: queue for key in keys}))
    size = len(json.dumps(row, separators=(",", ":")).encode())
    assert size == worst_index_bytes(keys, n) and size <= INDEX_MAX_BYTES, size
    assert len(json.dumps(row).encode()) < 1024 * 1024  # even with spaces after separators


def test_the_bound_on_max_events_follows_the_registrys_size():
    keys = [p.key for p in REGISTRY]
    for extra in range(0, 12, 3):
        more = [*keys, *(f"destination-{i}" for i in range(extra))]
        n = max_events_within(more)
        assert worst_index_bytes(more, n) <= INDEX_MAX_BYTES < worst_index_bytes(more, n + 1) or n == 2000
    assert max_events_within([*keys, "a-fourth"]) < max_events_within(keys)


def replace_times(p: Parked, t: float) -> Parked:
    return replace(p, first_failed_at=t, next_at=t, attempts=10**9 - 1)


def test_payload_keys_name_their_user():
    key = pendingrows.payload_key('we"ird\x00user', "cs", 12)
    assert user_of_payload_key(key) == 'we"ird\x00user'


def test_fit_takes_out_the_newest_events_by_their_place_in_the_queue_not_their_number():
    # An input record's number (from 2**42 up) is above any by-user record's, though the
    # by-user one came later (a record re-keyed through the hop): the later one goes.
    older = Item(INPUT_BASE * 1024, 1.0, RAW, SOURCE)
    newer = Item(7, 2.0, RAW, SOURCE)
    p = Pending().with_queue("cs", Queue(held=(older, newer)))
    fitted, taken = pendingrows.fit(p, len(json.dumps(p.to_dict())) * 2 // 3)  # room for one
    assert taken == [("cs", newer)] and fitted.queue("cs").held == (older,)


def test_fit_takes_out_the_newest_events_until_the_record_fits():
    p = Pending()
    for seq in range(1, 11):
        p, _ = hold(p, "cs" if seq % 2 else "csb", RAW, SOURCE, now=1.0, max_events=100, seq=seq)
    whole = len(json.dumps(p.to_dict()))
    fitted, taken = pendingrows.fit(p, whole // 2)
    assert len(json.dumps(fitted.to_dict())) <= whole // 2
    assert [e.seq for _, e in taken] == list(range(11 - len(taken), 11))  # the newest, oldest first
    assert pendingrows.without(p, [(d, e.seq) for d, e in taken]) == fitted
    assert pendingrows.fit(p, whole + 100) == (p, [])
