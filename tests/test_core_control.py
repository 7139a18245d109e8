"""Control records (streams.core.control): one typed class per kind, and the wire
format earlier versions wrote, frozen here byte for byte so that records already in a
by-user topic during an upgrade stay readable."""

from __future__ import annotations

import pytest

from streams.core import control
from streams.core.control import (
    KIND_HEADER,
    CaughtUp,
    GroupKnown,
    GroupUpdate,
    GroupWait,
    MergeDone,
    MergeProfile,
    MergeRequest,
    Park,
    PendingDone,
    Retried,
    RetryDue,
    Sweep,
    WindowClose,
    WindowDone,
    decode,
    encode,
)
from streams.core.pending import Parked, Pending
from streams.core.retry import Outcome
from streams.core.spill import SpillDone
from streams.core.state import UserState

PARKED = Parked(
    0,
    '{"type":"track","userId":"u1","event":"E","messageId":"m-1"}',
    {"topic": "segment-events", "partition": 0, "offset": 7},
    {"method": "POST", "path": "/v1/events", "json": {"a": 1}, "query": {}},
    "m-1",
    first_failed_at=1700000000.5,
    attempts=3,
    next_at=1700000010.0,
    last_error="ClientSuccess answered 503: busy",
)
OLD_USER = {  # a version-1 user record, as 0.1 stored it (CustomerSuccessBox ids at the top)
    "v": 1,
    "key": "anon-1",
    "user_id": None,
    "traits": {"plan": "free"},
    "group_id": None,
    "groups": [],
    "csb_account_id": None,
    "csb_user_id": None,
    "first_seen": "2026-11-30T10:00:00+00:00",
    "last_seen": "2026-11-30T10:00:00+00:00",
    "anonymous_ids": [],
    "merged_into": None,
}
OLD_PENDING = {
    "v": 1,
    "next_seq": 2,
    "queues": {
        "clientsuccess": {
            "held": [
                {
                    "seq": 1,
                    "held_at": 1700000000.0,
                    "raw": '{"type":"page","anonymousId":"anon-1","messageId":"m-0"}',
                    "source": {"topic": "segment-events", "partition": 3, "offset": 11},
                }
            ],
            "releasing": [],
            "parked": [],
        }
    },
}

# (header value, record value) exactly as streams/app.py 0.1 produced them
# (`json.dumps(body).encode()`, header cs-relay-kind), and the record each one is.
FROZEN = [
    (b"pending-done", b'{"destination": "clientsuccess", "seq": 4}', PendingDone("clientsuccess", 4)),
    (b"merge-request", b'{"into": "u1"}', MergeRequest("u1")),
    (
        b"merge-profile",
        b'{"anonymous_id": "anon-1", "user": {"v": 1, "key": "anon-1", "user_id": null, "traits": {"plan": "free"}, '
        b'"group_id": null, "groups": [], "csb_account_id": null, "csb_user_id": null, '
        b'"first_seen": "2026-11-30T10:00:00+00:00", "last_seen": "2026-11-30T10:00:00+00:00", "anonymous_ids": [], '
        b'"merged_into": null}, "pending": {"v": 1, "next_seq": 2, "queues": {"clientsuccess": {"held": [{"seq": 1, '
        b'"held_at": 1700000000.0, '
        b'"raw": "{\\"type\\":\\"page\\",\\"anonymousId\\":\\"anon-1\\",\\"messageId\\":\\"m-0\\"}", '
        b'"source": {"topic": "segment-events", "partition": 3, "offset": 11}}], "releasing": [], "parked": []}}}}',
        MergeProfile("anon-1", OLD_USER, OLD_PENDING),
    ),
    (b"sweep", b"{}", Sweep()),
    (
        b"park",
        b'{"destination": "clientsuccess", "released_seq": 2, "parked": {"seq": 0, '
        b'"raw": "{\\"type\\":\\"track\\",\\"userId\\":\\"u1\\",\\"event\\":\\"E\\",\\"messageId\\":\\"m-1\\"}", '
        b'"source": {"topic": "segment-events", "partition": 0, "offset": 7}, '
        b'"request": {"method": "POST", "path": "/v1/events", "json": {"a": 1}, "query": {}}, "message_id": "m-1", '
        b'"first_failed_at": 1700000000.5, "attempts": 3, "next_at": 1700000010.0, '
        b'"last_error": "ClientSuccess answered 503: busy"}}',
        Park("clientsuccess", 2, PARKED),
    ),
    (b"retry-due", b'{"keys": ["u1", "u2"]}', RetryDue(("u1", "u2"))),
    (
        b"retried",
        b'{"destination": "clientsuccess", "seq": 5, "outcome": "retry", "attempts": 3, "status": 503, '
        b'"error": "ClientSuccess answered 503: busy", "retry_after": 2.0}',
        Retried("clientsuccess", 5, Outcome.RETRY, 3, 503, "ClientSuccess answered 503: busy", 2.0),
    ),
    # aggregation windows (issue 15, item 3)
    (b"window-close", b'{"keys": ["u1", "u2"]}', WindowClose(("u1", "u2"))),
    (b"window-done", b'{"window": "clientsuccess:1700000000:abc"}', WindowDone("clientsuccess:1700000000:abc")),
    # the merge's confirmation (issue 16, item 3)
    (b"merge-done", b'{"into": "u1"}', MergeDone("u1")),
    # groups written by their own partition, and the users waiting for them (issue 16, item 4)
    (
        b"group-update",
        b'{"call": "{\\"type\\":\\"group\\",\\"userId\\":\\"u1\\",\\"groupId\\":\\"g1\\"}", '
        b'"at": "2026-11-30T10:00:00+00:00"}',
        GroupUpdate('{"type":"group","userId":"u1","groupId":"g1"}', "2026-11-30T10:00:00+00:00"),
    ),
    (b"group-wait", b'{"user": "u1", "seen": null}', GroupWait("u1", None)),
    (
        b"group-known",
        b'{"group": {"group_id": "g1", "name": "Acme"}}',
        GroupKnown({"group_id": "g1", "name": "Acme"}),
    ),
    # a worker's assignment read back in its partition (issue 22, finding 3)
    (b"caught-up", b'{"token": "0a1b2c3d4e5f/2/3"}', CaughtUp("0a1b2c3d4e5f/2/3")),
    # a spilled delivery's confirmation (issue 23, fairness)
    (
        b"spill-done",
        b'{"destination": "clientsuccess", "seqs": [7340032, 8388608]}',
        SpillDone("clientsuccess", (7 << 20, 8 << 20)),
    ),
]


def test_a_park_of_a_call_sent_at_once_carries_the_call_s_number():
    value, headers = encode(Park("clientsuccess", None, PARKED, 7 << 20))
    assert b'"seq": 7340032' in value and decode(headers, value) == Park("clientsuccess", None, PARKED, 7 << 20)


@pytest.mark.parametrize("kind, value, record", FROZEN, ids=[k.decode() for k, _, _ in FROZEN])
def test_frozen_records_of_every_kind_decode_and_encode_to_the_same_bytes(kind, value, record):
    assert decode({KIND_HEADER: kind}, value) == record
    assert encode(record) == (value, {KIND_HEADER: kind})


def test_every_kind_is_frozen_here_once():
    assert sorted(k for k, _, _ in FROZEN) == sorted(control.KINDS)
    assert {type(r) for _, _, r in FROZEN} == set(control.KINDS.values())


def test_a_merge_profile_in_transit_from_an_older_worker_reads_with_the_table_readers():
    record = decode({KIND_HEADER: b"merge-profile"}, FROZEN[2][1])
    assert isinstance(record, MergeProfile)
    assert UserState.from_dict(record.user).traits == {"plan": "free"}
    assert [i.seq for i in Pending.from_dict(record.pending).queue("clientsuccess").held] == [1]


def test_records_without_a_known_kind_are_segment_calls():
    assert decode({}, b'{"type":"track"}') is None
    assert decode({"cs-relay-source": b"{}"}, b"{}") is None
    # A kind a newer version added is read as a Segment call, as earlier versions did.
    assert decode({KIND_HEADER: b"from-the-future"}, b"{}") is None


def test_a_retried_record_without_optional_fields_takes_the_old_defaults():
    record = decode({KIND_HEADER: b"retried"}, b'{"destination": "csb", "seq": 1, "outcome": "done"}')
    assert record == Retried("csb", 1, Outcome.DONE, attempts=1, status=None, error="", retry_after=None)


def test_a_broken_control_record_raises():
    with pytest.raises(ValueError):
        decode({KIND_HEADER: b"park"}, b"not json")
    with pytest.raises(KeyError):
        decode({KIND_HEADER: b"pending-done"}, b'{"seq": 1}')
