"""Tests for streams.core.segment: parsing and validation of Segment spec messages."""

from __future__ import annotations

import hashlib
import json
import pickle
import string
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.message import InvalidMessage, Message, destination_enabled
from streams.core.reasons import INTAKE as Reason  # the intake stage's reasons
from streams.core.segment import MAX_DEPTH, MAX_MESSAGE_BYTES, parse, validate
from streams.core.timestamps import parse_timestamp, utc_iso
from streams.core.validation import MAX_MESSAGE_ID_LENGTH, MESSAGE_TYPES, derive_message_id
from tests.factories import json_bytes

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def base(type_: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid message of `type_`, with `fields` added or overriding."""
    body: dict[str, Any] = {"type": type_, "userId": "u1", "messageId": "m-1"}
    if type_ == "group":
        body["groupId"] = "g1"
    elif type_ == "track":
        body["event"] = "Signed In"
    elif type_ == "alias":
        body["previousId"] = "anon-1"
    body.update(fields)
    return body


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def reject(data: bytes | dict[str, Any], reason: Reason) -> InvalidMessage:
    """Parse `data` (a dict is JSON-encoded first) and assert it fails with `reason`."""
    raw = encode(data) if isinstance(data, dict) else data
    with pytest.raises(InvalidMessage) as info:
        parse(raw)
    assert info.value.reason is reason, info.value
    return info.value


# ----------------------------------------------------------------------------- constants


def test_constants():
    assert MAX_MESSAGE_BYTES == 32 * 1024
    assert MAX_MESSAGE_ID_LENGTH == 100
    assert MAX_DEPTH == 64
    assert MESSAGE_TYPES == {"identify", "group", "track", "page", "screen", "alias"}


def test_reason_values_are_stable():
    assert {r.name: r.value for r in Reason} == {
        "NOT_UTF8": "not_utf8",
        "INVALID_JSON": "invalid_json",
        "NOT_AN_OBJECT": "not_an_object",
        "OVERSIZED": "oversized",
        "UNKNOWN_TYPE": "unknown_type",
        "MISSING_FIELD": "missing_field",
        "WRONG_TYPE": "wrong_type",
        "INVALID_TIMESTAMP": "invalid_timestamp",
        "MESSAGE_ID_TOO_LONG": "message_id_too_long",
        "TOO_DEEP": "too_deep",
        "ID_TOO_LONG": "id_too_long",
        "NAME_TOO_LONG": "name_too_long",
    }
    assert Reason.TOO_DEEP == "too_deep"  # a str enum: usable directly as a header value


def test_invalid_message_carries_reason_detail_and_field_and_pickles():
    exc = reject(without(base("track"), "event"), Reason.MISSING_FIELD)
    assert exc.field == "event"
    assert "track" in exc.detail and "'event'" in exc.detail
    assert str(exc) == f"missing_field: {exc.detail}"
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.reason, copy.detail, copy.field) == (exc.reason, exc.detail, exc.field)


# ----------------------------------------------------------------------------- valid messages


@pytest.mark.parametrize("type_", sorted(MESSAGE_TYPES))
def test_minimal_message_of_every_type_parses(type_):
    msg = parse(encode(base(type_)))
    assert isinstance(msg, Message)
    assert msg.type == type_
    assert msg.message_id == "m-1"
    assert msg.user_id == "u1"
    assert msg.anonymous_id is None
    assert msg.key == "u1"
    assert msg.timestamp is None
    assert msg.context == {} and msg.integrations == {}
    assert msg.traits == {} and msg.properties == {}


def test_full_identify_exposes_fields():
    body = {
        "type": "identify",
        "messageId": "abc",
        "userId": "u-alice",
        "anonymousId": "anon-7",
        "timestamp": "2026-11-18T11:08:31Z",
        "sentAt": "2026-11-18T11:08:32.120Z",
        "receivedAt": "2026-11-18T11:08:33.5+00:00",
        "originalTimestamp": "2026-11-18T11:08:31.000000+01:00",
        "context": {"groupId": "acme", "ip": "1.2.3.4"},
        "integrations": {"All": False, "ClientSuccess": True},
        "traits": {"firstName": "Alice", "email": "a@example.com"},
        "version": 2,
    }
    msg = parse(encode(body))
    assert msg.user_id == "u-alice" and msg.anonymous_id == "anon-7" and msg.key == "u-alice"
    assert msg.timestamp == "2026-11-18T11:08:31Z"
    assert msg.context == {"groupId": "acme", "ip": "1.2.3.4"}
    assert msg.context_group_id == "acme"
    assert msg.integrations == {"All": False, "ClientSuccess": True}
    assert msg.traits == {"firstName": "Alice", "email": "a@example.com"}
    assert msg.raw == body


def test_anonymous_only_message_is_keyed_by_anonymous_id():
    msg = parse(encode(without(base("page", anonymousId="anon-1"), "userId")))
    assert msg.user_id is None and msg.anonymous_id == "anon-1" and msg.key == "anon-1"


def test_empty_user_id_falls_back_to_anonymous_id():
    msg = parse(encode(base("track", userId="", anonymousId="anon-1")))
    assert msg.user_id is None and msg.key == "anon-1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [(42, "42"), (-7, "-7"), (0, "0"), (12.0, "12"), (1.5, "1.5"), (12345678901234567890, "12345678901234567890")],
)
def test_numeric_user_and_anonymous_ids_become_strings(given, expected):
    msg = parse(encode(base("identify", userId=given, anonymousId=given)))
    assert msg.user_id == expected and msg.anonymous_id == expected and msg.key == expected
    assert msg.raw["userId"] == given  # raw is left as received


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
@pytest.mark.parametrize("value", [True, False, [], ["u1"], {"id": "u1"}])
def test_non_string_non_number_ids_are_wrong_type(field, value):
    exc = reject(base("identify", **{field: value}), Reason.WRONG_TYPE)
    assert exc.field == field


@pytest.mark.parametrize(
    "ids",
    [{}, {"userId": None}, {"userId": ""}, {"anonymousId": ""}, {"userId": "", "anonymousId": None}],
)
def test_message_without_user_or_anonymous_id_is_missing_field(ids):
    exc = reject({**without(base("identify"), "userId"), **ids}, Reason.MISSING_FIELD)
    assert exc.field == "userId"
    assert "anonymousId" in exc.detail


def test_unknown_extra_fields_are_kept_untouched():
    body = base(
        "track",
        properties={"revenue": 9.5, "nested": {"a": [1, None, True]}},
        vendorField={"x": [1, 2]},
        channel="server",
        writeKey=None,
    )
    msg = parse(encode(body))
    assert msg.raw == body
    assert list(msg.raw) == list(body)  # key order too
    assert msg.properties == {"revenue": 9.5, "nested": {"a": [1, None, True]}}


def test_raw_keeps_the_body_and_its_compact_json_parses_back_to_an_equal_message():
    body = base("page", name="Pricing", category="Docs", properties={"title": "Prix €"}, extra=[1, 2.5, None])
    msg = parse(json.dumps(body, indent=2).encode())
    assert msg.raw == body
    assert parse(json_bytes(msg)) == msg


def test_null_objects_count_as_absent():
    msg = parse(encode(base("track", context=None, integrations=None, properties=None, traits=None)))
    assert msg.context == {} and msg.integrations == {} and msg.properties == {} and msg.traits == {}


def test_utf8_text_with_non_ascii_and_escapes_is_fine():
    body = base("identify", userId="üser-ß", traits={"name": "Zoë 😀", "emoji": "\U0001f600"})
    msg = parse(json.dumps(body, ensure_ascii=True).encode())  # valid surrogate *pair* escapes
    assert msg.user_id == "üser-ß" and msg.traits["emoji"] == "😀"
    assert parse(json.dumps(body, ensure_ascii=False).encode()) == msg


@pytest.mark.parametrize("data", [bytearray(encode(base("identify"))), memoryview(encode(base("identify")))])
def test_parse_accepts_bytes_like(data):
    assert parse(data).user_id == "u1"


def test_parse_accepts_str():
    assert parse(json.dumps(base("identify"))).user_id == "u1"


def test_parse_refuses_non_bytes_with_type_error():
    with pytest.raises(TypeError):
        parse(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- size


def padded(size: int) -> bytes:
    """A valid identify message of exactly `size` bytes."""
    data = encode(base("identify", pad=""))
    data = encode(base("identify", pad="x" * (size - len(data))))
    assert len(data) == size
    return data


def test_message_of_exactly_the_limit_is_accepted():
    assert parse(padded(MAX_MESSAGE_BYTES)).user_id == "u1"


def test_message_over_the_limit_is_oversized():
    exc = reject(padded(MAX_MESSAGE_BYTES + 1), Reason.OVERSIZED)
    assert str(MAX_MESSAGE_BYTES + 1) in exc.detail
    assert "xxxx" not in exc.detail


def test_size_is_checked_before_decoding():
    reject(b"\xff" * (MAX_MESSAGE_BYTES + 1), Reason.OVERSIZED)


def test_size_counts_bytes_not_characters():
    data = encode(base("identify", pad="é" * (MAX_MESSAGE_BYTES // 2)))  # json escapes it: 6 bytes each
    reject(data, Reason.OVERSIZED)
    raw = json.dumps(base("identify", pad="é" * 16_400), ensure_ascii=False).encode()
    assert len(raw) > MAX_MESSAGE_BYTES > len(json.dumps(base("identify", pad="é" * 16_400), ensure_ascii=False))
    reject(raw, Reason.OVERSIZED)


# ----------------------------------------------------------------------------- encoding, JSON


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b'{"type":"identify","userId":"\xe9"}',  # latin-1 é
        b'{"type":"identify","userId":"\xed\xa0\x80"}',  # CESU-style encoded surrogate
        b'{"type":"identify","userId":"\xc3"}',  # truncated sequence
        "{}".encode("utf-16"),
    ],
)
def test_bytes_that_are_not_utf8_are_not_utf8(data):
    exc = reject(data, Reason.NOT_UTF8)
    assert "position" in exc.detail


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not json",
        b'{"type": "identify"',
        b'{"type": "identify"} trailing',
        b"{'type': 'identify'}",
        b'{"type":"identify","userId":"u1","n":NaN}',
        b'{"type":"identify","userId":"u1","n":Infinity}',
        b'{"type":"identify","userId":"u1","n":-Infinity}',
        b"NaN",
        b'{"type":"identify","userId":"u1","n":1e400}',
        b'{"type":"identify","userId":"u1","n":-1e999}',
        b'{"type":"identify","userId":"u1","n":' + b"9" * 5000 + b"}",
        b'{"type":"identify","userId":"\\ud800"}',
        b'{"type":"identify","userId":"u1","traits":{"\\udfff":1}}',
        b'{"type":"identify","userId":"u1","p":["ok","x\\uDBFFy"]}',
        b'"\\ud83d"',
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
    ],
)
def test_text_that_is_not_json_is_invalid_json(data):
    reject(data, Reason.INVALID_JSON)


def test_surrogate_pair_escape_is_not_mistaken_for_unpaired():
    msg = parse(b'{"type":"identify","userId":"\\ud83d\\ude00","k":"\\\\ud800"}')
    assert msg.user_id == "😀" and msg.raw["k"] == "\\ud800"


def test_invalid_json_detail_does_not_echo_payload():
    exc = reject(b'{"type":"identify","secret":"hunter2-hunter2", oops}', Reason.INVALID_JSON)
    assert "hunter2" not in exc.detail


@pytest.mark.parametrize("value", [[], [base("identify")], "identify", 42, 1.5, None, True, False])
def test_json_that_is_not_an_object_is_not_an_object(value):
    reject(encode(value), Reason.NOT_AN_OBJECT)


# ----------------------------------------------------------------------------- depth


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def test_nesting_up_to_max_depth_is_accepted():
    body = base("track", deep=nested(MAX_DEPTH - 1))  # the top object + 63 levels
    assert parse(encode(body)).raw["deep"] == body["deep"]
    body = base("track", properties={"k": nested(MAX_DEPTH - 2)})
    assert parse(encode(body)).properties == body["properties"]


def test_nesting_beyond_max_depth_is_too_deep():
    reject(encode(base("track", deep=nested(MAX_DEPTH))), Reason.TOO_DEEP)
    reject(encode(base("track", properties={"k": nested(MAX_DEPTH - 1)})), Reason.TOO_DEEP)


def test_deep_array_at_top_level_is_too_deep():
    reject(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), Reason.TOO_DEEP)


@pytest.mark.parametrize("depth", [1_000, 5_000, 16_000])
def test_very_deep_nesting_is_too_deep_not_recursion_error(depth):
    reject(b"[" * depth + b"]" * depth, Reason.TOO_DEEP)
    depth = min(depth, MAX_MESSAGE_BYTES // 6)  # 6 bytes a level, within the size limit
    reject(b'{"a":' * depth + b"1" + b"}" * depth, Reason.TOO_DEEP)


def test_unbalanced_deep_input_is_rejected_without_crashing():
    with pytest.raises(InvalidMessage) as info:
        parse(b"[" * MAX_MESSAGE_BYTES)
    assert info.value.reason in (Reason.TOO_DEEP, Reason.INVALID_JSON)


# ----------------------------------------------------------------------------- type


def test_missing_type_is_missing_field():
    exc = reject(without(base("identify"), "type"), Reason.MISSING_FIELD)
    assert exc.field == "type"


def test_null_type_is_missing_field():
    reject(base("identify", type=None), Reason.MISSING_FIELD)


@pytest.mark.parametrize("value", [1, True, ["track"], {"t": "track"}])
def test_non_string_type_is_wrong_type(value):
    exc = reject(base("identify", type=value), Reason.WRONG_TYPE)
    assert exc.field == "type"


@pytest.mark.parametrize("value", ["", "Track", "TRACK", "batch", "track ", "pageview"])
def test_other_type_is_unknown_type(value):
    exc = reject(base("identify", type=value), Reason.UNKNOWN_TYPE)
    assert exc.field == "type"


def test_unknown_type_detail_is_short_even_for_a_huge_value():
    exc = reject(base("identify", type="z" * 10_000), Reason.UNKNOWN_TYPE)
    assert len(exc.detail) < 200


# ----------------------------------------------------------------------------- messageId


def test_message_id_is_kept_as_given():
    assert parse(encode(base("identify", messageId="ajs-abc-123"))).message_id == "ajs-abc-123"


def test_message_id_of_exactly_100_characters_is_accepted():
    assert parse(encode(base("identify", messageId="m" * 100))).message_id == "m" * 100


def test_message_id_over_100_characters_is_too_long():
    exc = reject(base("identify", messageId="m" * 101), Reason.MESSAGE_ID_TOO_LONG)
    assert exc.field == "messageId" and "101" in exc.detail


def test_message_id_length_counts_characters_not_bytes():
    assert parse(encode(base("identify", messageId="é" * 100))).message_id == "é" * 100


@pytest.mark.parametrize("value", [123, 1.5, True, ["m"], {"id": "m"}])
def test_non_string_message_id_is_wrong_type(value):
    exc = reject(base("identify", messageId=value), Reason.WRONG_TYPE)
    assert exc.field == "messageId"


@pytest.mark.parametrize("given", [{}, {"messageId": None}, {"messageId": ""}])
def test_absent_message_id_is_derived_and_filled_into_raw(given):
    body = {**without(base("track"), "messageId"), **given}
    msg = parse(encode(body))
    assert msg.message_id.startswith("csr-")
    assert len(msg.message_id) == 4 + 64 <= MAX_MESSAGE_ID_LENGTH
    assert msg.raw["messageId"] == msg.message_id
    assert msg.message_id == derive_message_id(without(base("track"), "messageId"))
    assert parse(json_bytes(msg)) == msg


def test_derived_message_id_is_the_same_for_a_replay_with_new_sent_at():
    call = without(base("track", timestamp="2026-01-01T00:00:00Z"), "messageId")
    first = parse(encode({**call, "sentAt": "2026-01-01T00:00:01Z"}))
    retry = parse(encode({**call, "sentAt": "2026-01-01T00:05:00Z", "receivedAt": "2026-01-01T00:05:01Z"}))
    assert first.message_id == retry.message_id


def test_derived_message_id_differs_for_different_calls():
    call = without(base("track"), "messageId")
    assert parse(encode(call)).message_id != parse(encode({**call, "event": "Other"})).message_id
    assert parse(encode(call)).message_id != parse(encode({**call, "timestamp": "2026-01-01T00:00:00Z"})).message_id


def test_derive_message_id_known_value():
    obj = {"type": "track", "userId": "u1", "event": "E"}

    expected = hashlib.sha256(b'{"event":"E","type":"track","userId":"u1"}').hexdigest()
    assert derive_message_id(obj) == "csr-" + expected


# ----------------------------------------------------------------------------- timestamps


VALID_TIMESTAMPS = [
    ("2026-11-18T11:07:17Z", datetime(2026, 11, 18, 11, 7, 17, tzinfo=UTC)),
    ("2026-11-18T11:07:17.123Z", datetime(2026, 11, 18, 11, 7, 17, 123000, tzinfo=UTC)),
    ("2026-11-18T11:07:17.123456Z", datetime(2026, 11, 18, 11, 7, 17, 123456, tzinfo=UTC)),
    ("2026-11-18T11:07:17.123456789Z", datetime(2026, 11, 18, 11, 7, 17, 123456, tzinfo=UTC)),
    ("2026-11-18T11:07:17+00:00", datetime(2026, 11, 18, 11, 7, 17, tzinfo=UTC)),
    (
        "2026-11-18T11:07:17.5+02:00",
        datetime(2026, 11, 18, 11, 7, 17, 500000, tzinfo=timezone(timedelta(hours=2))),
    ),
    ("2026-11-18T11:07:17-0530", datetime(2026, 11, 18, 11, 7, 17, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
    ("2026-11-18T11:07:17+09", datetime(2026, 11, 18, 11, 7, 17, tzinfo=timezone(timedelta(hours=9)))),
    ("2026-11-18T11:07Z", datetime(2026, 11, 18, 11, 7, tzinfo=UTC)),
    ("2026-11-18T11:07:17", datetime(2026, 11, 18, 11, 7, 17, tzinfo=UTC)),  # no offset: UTC
    (
        "2024-02-29T23:59:59.999999+23:59",
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=23, minutes=59))),
    ),
]


@pytest.mark.parametrize(("text", "expected"), VALID_TIMESTAMPS)
def test_parse_timestamp_accepts_iso8601(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


INVALID_TIMESTAMPS = [
    "",
    "now",
    "2026-11-18",  # date only
    "2026-11",
    "2026-11-18T",
    "2026-11-18T11",
    "20261118T110717Z",  # basic format
    "2026-W47-3T11:07:17Z",  # week date
    "2026-322T11:07:17Z",  # ordinal date
    "2026-11-18 11:07:17Z",  # space separator
    "2026-11-18T11:07:17.Z",
    "2026-11-18T11:07:17,5Z",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2026-11-18T24:00:00Z",
    "2026-11-18T11:60:00Z",
    "2026-11-18T11:07:60Z",  # leap second
    "2026-11-18T11:07:17+24:00",
    "2026-11-18T11:07:17+01:60",
    "0000-01-01T00:00:00Z",
    " 2026-11-18T11:07:17Z",
    "2026-11-18T11:07:17Z ",
    "2026-11-18T11:07:17ZZ",
    "2026-11-18t11:07:17z",
    "٢٠٢٦-11-18T11:07:17Z",  # non-ASCII digits
    "1700000000",
    "Wed, 18 Nov 2026 11:07:17 GMT",
]


@pytest.mark.parametrize("text", INVALID_TIMESTAMPS)
def test_parse_timestamp_rejects_non_iso8601(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_parse_timestamp_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_timestamp(1700000000)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["timestamp", "sentAt", "receivedAt", "originalTimestamp"])
@pytest.mark.parametrize("text", ["2026-11-18", "yesterday", "2026-02-30T00:00:00Z"])
def test_message_with_unparseable_timestamp_is_invalid_timestamp(field, text):
    exc = reject(base("identify", **{field: text}), Reason.INVALID_TIMESTAMP)
    assert exc.field == field and field in exc.detail


@pytest.mark.parametrize("field", ["timestamp", "sentAt", "receivedAt", "originalTimestamp"])
@pytest.mark.parametrize("value", [1700000000, 1.7e9, True, ["2026-11-18T11:07:17Z"], {"t": 1}])
def test_message_with_non_string_timestamp_is_invalid_timestamp(field, value):
    reject(base("identify", **{field: value}), Reason.INVALID_TIMESTAMP)


@pytest.mark.parametrize("field", ["timestamp", "sentAt", "receivedAt", "originalTimestamp"])
def test_null_timestamp_counts_as_absent(field):
    msg = parse(encode(base("identify", **{field: None})))
    assert msg.timestamp is None


def test_message_timestamp_is_kept_as_given():
    msg = parse(encode(base("track", timestamp="2026-11-18T11:07:17.123456789-05:00")))
    assert msg.timestamp == "2026-11-18T11:07:17.123456789-05:00"


def test_message_timestamp_is_read_once_for_every_later_stage():
    msg = parse(encode(base("track", timestamp="2026-11-18T11:07:17.123456789-05:00")))
    assert msg.moment == parse_timestamp("2026-11-18T11:07:17.123456789-05:00")
    assert msg.utc_timestamp == "2026-11-18T16:07:17.123456Z" == utc_iso(msg.timestamp)
    untimed = parse(encode(base("track", sentAt="2026-11-18T11:07:17Z")))
    assert untimed.moment is None and untimed.utc_timestamp is None


def test_timestamp_detail_truncates_huge_value():
    exc = reject(base("identify", timestamp="9" * 20_000), Reason.INVALID_TIMESTAMP)
    assert len(exc.detail) < 200


# ----------------------------------------------------------------------------- object fields


@pytest.mark.parametrize("field", ["context", "integrations", "traits", "properties"])
@pytest.mark.parametrize("value", [[], [{"a": 1}], "x", 1, True])
def test_object_field_that_is_not_an_object_is_wrong_type(field, value):
    exc = reject(base("track", **{field: value}), Reason.WRONG_TYPE)
    assert exc.field == field and "object" in exc.detail


# ----------------------------------------------------------------------------- per type


def test_group_needs_group_id():
    exc = reject(without(base("group"), "groupId"), Reason.MISSING_FIELD)
    assert exc.field == "groupId" and "group" in exc.detail


@pytest.mark.parametrize("value", [None, ""])
def test_group_with_null_or_empty_group_id_is_missing_field(value):
    reject(base("group", groupId=value), Reason.MISSING_FIELD)


@pytest.mark.parametrize(("given", "expected"), [("acme", "acme"), (1001, "1001"), (7.0, "7")])
def test_group_id_string_or_number_becomes_string(given, expected):
    msg = parse(encode(base("group", groupId=given, traits={"name": "Acme"})))
    assert msg.group_id == expected
    assert msg.traits == {"name": "Acme"}


@pytest.mark.parametrize("value", [True, ["g"], {"id": "g"}])
def test_group_id_of_other_type_is_wrong_type(value):
    reject(base("group", groupId=value), Reason.WRONG_TYPE)


def test_track_needs_event():
    exc = reject(without(base("track"), "event"), Reason.MISSING_FIELD)
    assert exc.detail == "track message needs a non-empty string 'event'"


@pytest.mark.parametrize("value", [None, ""])
def test_track_with_null_or_empty_event_is_missing_field(value):
    reject(base("track", event=value), Reason.MISSING_FIELD)


@pytest.mark.parametrize("value", [1, True, ["Signed In"], {"name": "x"}])
def test_track_event_must_be_a_string(value):
    exc = reject(base("track", event=value), Reason.WRONG_TYPE)
    assert exc.field == "event"


def test_track_exposes_event_and_properties():
    msg = parse(encode(base("track", event="Order Completed", properties={"value": 3})))
    assert msg.event == "Order Completed" and msg.properties == {"value": 3}


def test_alias_needs_previous_id():
    exc = reject(without(base("alias"), "previousId"), Reason.MISSING_FIELD)
    assert exc.field == "previousId"


def test_alias_needs_user_id_even_with_anonymous_id():
    exc = reject(without(base("alias", anonymousId="anon-1"), "userId"), Reason.MISSING_FIELD)
    assert exc.field == "userId" and "alias" in exc.detail


def test_alias_with_number_previous_id_becomes_string():
    msg = parse(encode(base("alias", previousId=99)))
    assert msg.previous_id == "99" and msg.user_id == "u1"


@pytest.mark.parametrize("value", [False, [1], {"id": 1}])
def test_alias_previous_id_of_other_type_is_wrong_type(value):
    reject(base("alias", previousId=value), Reason.WRONG_TYPE)


@pytest.mark.parametrize("type_", ["page", "screen"])
def test_page_and_screen_take_optional_string_name_and_category(type_):
    assert parse(encode(base(type_))).name is None
    msg = parse(encode(base(type_, name="Pricing", category="Docs", properties={"path": "/p"})))
    assert (msg.name, msg.category, msg.properties) == ("Pricing", "Docs", {"path": "/p"})
    assert parse(encode(base(type_, name=None, category=None))).name is None


@pytest.mark.parametrize("type_", ["page", "screen"])
@pytest.mark.parametrize("field", ["name", "category"])
@pytest.mark.parametrize("value", [1, False, ["x"], {"x": 1}])
def test_page_and_screen_name_and_category_must_be_strings(type_, field, value):
    exc = reject(base(type_, **{field: value}), Reason.WRONG_TYPE)
    assert exc.field == field


def test_identify_needs_nothing_more():
    msg = parse(b'{"type":"identify","anonymousId":"a"}')
    assert msg.key == "a" and msg.traits == {}


def test_fields_of_other_types_are_not_checked():
    # `event` on an identify or a numeric `name` on a track are extra fields, kept as is
    msg = parse(encode(base("identify", event=5, name=7, groupId=True)))
    assert msg.raw["event"] == 5 and msg.event is None and msg.name is None and msg.group_id is None


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"groupId": "acme"}, "acme"),
        ({"groupId": 12}, "12"),
        ({"groupId": ""}, None),
        ({}, None),
        ({"groupId": None}, None),
        ({"groupId": ["x"]}, None),
    ],
)
def test_context_group_id(context, expected):
    assert parse(encode(base("track", context=context))).context_group_id == expected


def test_message_is_frozen():
    msg = parse(encode(base("identify")))
    with pytest.raises(AttributeError):
        msg.user_id = "other"  # type: ignore[misc]


# ----------------------------------------------------------------------------- validate


def test_validate_gives_the_same_message_as_parse():
    body = base("track", properties={"v": 1.5}, context={"groupId": "g"})
    assert validate(body) == parse(encode(body))


def test_validate_does_not_modify_the_callers_object():
    body = without(base("track", properties={"a": [1]}), "messageId")
    snapshot = json.loads(json.dumps(body))
    msg = validate(body)
    assert body == snapshot and "messageId" not in body
    assert msg.raw["messageId"] == msg.message_id
    msg.raw["properties"]["a"].append(2)  # type: ignore[index]
    assert body["properties"]["a"] == [1]


def test_validate_accepts_any_mapping():
    assert validate(MappingProxyType(base("identify"))).user_id == "u1"


@pytest.mark.parametrize("value", [[base("identify")], "x", 1, None])
def test_validate_non_object_is_not_an_object(value):
    with pytest.raises(InvalidMessage) as info:
        validate(value)
    assert info.value.reason is Reason.NOT_AN_OBJECT


@pytest.mark.parametrize(
    "extra",
    [float("nan"), float("inf"), {1, 2}, b"bytes", object(), "\ud800"],
)
def test_validate_non_json_values_are_invalid_json(extra):
    with pytest.raises(InvalidMessage) as info:
        validate(base("identify", extra=extra))
    assert info.value.reason is Reason.INVALID_JSON


def test_validate_circular_object_is_invalid_json():
    body = base("identify")
    body["self"] = body
    with pytest.raises(InvalidMessage) as info:
        validate(body)
    assert info.value.reason is Reason.INVALID_JSON


@pytest.mark.parametrize("depth", [MAX_DEPTH, 5_000])
def test_validate_too_deep(depth):
    with pytest.raises(InvalidMessage) as info:
        validate(base("identify", deep=nested(depth)))
    assert info.value.reason is Reason.TOO_DEEP


def test_validate_oversized():
    with pytest.raises(InvalidMessage) as info:
        validate(base("identify", pad="x" * MAX_MESSAGE_BYTES))
    assert info.value.reason is Reason.OVERSIZED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (without(base("identify"), "type"), Reason.MISSING_FIELD),
        (base("identify", type="x"), Reason.UNKNOWN_TYPE),
        (base("identify", userId=[1]), Reason.WRONG_TYPE),
        (base("identify", messageId="m" * 101), Reason.MESSAGE_ID_TOO_LONG),
        (base("identify", timestamp="2026-11-18"), Reason.INVALID_TIMESTAMP),
        (without(base("group"), "groupId"), Reason.MISSING_FIELD),
    ],
)
def test_validate_applies_the_same_rules(body, reason):
    with pytest.raises(InvalidMessage) as info:
        validate(body)
    assert info.value.reason is reason


# ----------------------------------------------------------------------------- destination_enabled


@pytest.mark.parametrize(
    ("integrations", "expected"),
    [
        ({}, True),
        ({"All": True}, True),
        ({"All": False}, False),
        ({"ClientSuccess": True}, True),
        ({"ClientSuccess": False}, False),
        ({"All": False, "ClientSuccess": True}, True),
        ({"All": True, "ClientSuccess": False}, False),
        ({"All": False, "ClientSuccess": {}}, True),
        ({"All": False, "ClientSuccess": {"option": 1}}, True),
        ({"All": False, "Other": True}, False),
        ({"All": True, "Other": False}, True),
        ({"clientsuccess": False}, True),  # names are exact
    ],
)
def test_destination_enabled_table(integrations, expected):
    assert destination_enabled(integrations, "ClientSuccess") is expected


def test_destination_enabled_from_a_parsed_message():
    msg = parse(encode(base("track", integrations={"All": False, "CustomerSuccessBox": True})))
    assert destination_enabled(msg.integrations, "CustomerSuccessBox")
    assert not destination_enabled(msg.integrations, "ClientSuccess")


# ============================================================================= properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
ids = st.text(min_size=1, max_size=30) | st.integers(min_value=0, max_value=10**12)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
aware_datetimes = st.builds(
    lambda dt, tz: dt.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offsets,
)
iso_timestamps = aware_datetimes.map(lambda dt: dt.isoformat()) | aware_datetimes.map(
    lambda dt: dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
)
ABSENT = st.just(...)  # ... means "leave the field out"
message_types = st.sampled_from(sorted(MESSAGE_TYPES))
maybe_ids = ids | ABSENT
maybe_message_ids = st.text(min_size=1, max_size=MAX_MESSAGE_ID_LENGTH) | ABSENT
maybe_timestamps = iso_timestamps | st.none() | ABSENT
maybe_objects = json_objects | st.none() | ABSENT
maybe_texts = st.text(max_size=20) | st.none() | ABSENT
events = st.text(min_size=1, max_size=30)
extra_fields = st.dictionaries(
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=8).map(lambda k: "x_" + k), json_values, max_size=3
)


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message of any type, every optional field present, null or absent."""
    type_ = draw(message_types)
    body: dict[str, Any] = {"type": type_}

    def put(field: str, value: Any) -> None:
        if value is not ...:
            body[field] = value

    user = draw(ids if type_ == "alias" else maybe_ids)
    anonymous = draw(maybe_ids if user is not ... else ids)
    put("userId", user)
    put("anonymousId", anonymous)
    put("messageId", draw(maybe_message_ids))
    for field in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
        put(field, draw(maybe_timestamps))
    for field in ("context", "integrations", "traits", "properties"):
        put(field, draw(maybe_objects))
    if type_ == "group":
        body["groupId"] = draw(ids)
    elif type_ == "track":
        body["event"] = draw(events)
    elif type_ == "alias":
        body["previousId"] = draw(ids)
    elif type_ in ("page", "screen"):
        put("name", draw(maybe_texts))
        put("category", draw(maybe_texts))
    body.update(draw(extra_fields))
    return body


@PROPERTY_SETTINGS
@given(valid_messages())
def test_property_valid_messages_of_every_type_round_trip(body):
    msg = parse(encode(body))
    assert msg.type == body["type"]
    assert msg.key
    assert len(msg.message_id) <= MAX_MESSAGE_ID_LENGTH
    assert {k: v for k, v in msg.raw.items() if k != "messageId"} == {k: v for k, v in body.items() if k != "messageId"}
    again = parse(json_bytes(msg))
    assert again == msg
    assert json_bytes(again) == json_bytes(msg)
    assert validate(body) == msg
    assert validate(msg.raw) == msg


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_property_parse_arbitrary_bytes_only_raises_invalid_message(data):
    try:
        msg = parse(data)
    except InvalidMessage as exc:
        assert isinstance(exc.reason, Reason) and isinstance(exc.detail, str) and exc.detail
        exc.detail.encode("utf-8")  # a Kafka header value: must encode
    else:
        assert parse(json_bytes(msg)) == msg


@PROPERTY_SETTINGS
@given(valid_messages(), st.data())
def test_property_parse_mutated_valid_messages_only_raises_invalid_message(body, data):
    raw = bytearray(encode(body))
    start = data.draw(st.integers(min_value=0, max_value=len(raw)))
    end = data.draw(st.integers(min_value=start, max_value=min(len(raw), start + 4)))
    raw[start:end] = data.draw(st.binary(max_size=4) | st.sampled_from([b'"', b"{", b"[", b"]", b"}", b",", b"\\"]))
    try:
        msg = parse(bytes(raw))
    except InvalidMessage as exc:
        assert isinstance(exc.reason, Reason)
        exc.detail.encode("utf-8")
    else:
        assert parse(json_bytes(msg)) == msg


message_like_objects = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "userId",
            "anonymousId",
            "messageId",
            "timestamp",
            "sentAt",
            "receivedAt",
            "originalTimestamp",
            "context",
            "integrations",
            "traits",
            "properties",
            "groupId",
            "event",
            "previousId",
            "name",
            "category",
        ]
    ),
    json_values | st.sampled_from(sorted(MESSAGE_TYPES)) | iso_timestamps,
)


@PROPERTY_SETTINGS
@given(json_values | message_like_objects)
def test_property_parse_arbitrary_json_only_raises_invalid_message(value):
    for data in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        try:
            msg = parse(data)
        except InvalidMessage as exc:
            assert isinstance(exc.reason, Reason)
            exc.detail.encode("utf-8")
        else:
            assert parse(json_bytes(msg)) == msg
    try:
        validate(value)
    except InvalidMessage as exc:
        assert isinstance(exc.reason, Reason)


def reversed_keys(value: Any) -> Any:
    """`value` with the keys of every object, at every level, in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@PROPERTY_SETTINGS
@given(st.data(), valid_messages(), json_scalars, json_scalars)
def test_property_derive_message_id_is_deterministic_and_ignores_send_times_and_key_order(
    data, body, sent_at, received_at
):
    body = {k: v for k, v in body.items() if k != "messageId"}
    derived = derive_message_id(body)
    assert derived.startswith("csr-") and len(derived) <= MAX_MESSAGE_ID_LENGTH
    assert derive_message_id(body) == derived
    assert derive_message_id(json.loads(json.dumps(body))) == derived
    assert derive_message_id({**body, "sentAt": sent_at, "receivedAt": received_at}) == derived
    assert derive_message_id(reversed_keys(body)) == derived
    shuffled = data.draw(st.permutations(list(body)))
    assert derive_message_id({k: body[k] for k in shuffled}) == derived
    assert parse(encode(body)).message_id == derived
    changed = {**body, "type": body["type"] + "!"}
    assert derive_message_id(changed) != derived


switch_values = st.booleans() | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)


@PROPERTY_SETTINGS
@given(
    own=switch_values | st.just(...),
    all_=switch_values | st.just(...),
    others=st.dictionaries(st.sampled_from(["Other", "Webhooks", "clientsuccess"]), switch_values, max_size=3),
)
def test_property_destination_enabled_truth_table(own, all_, others):
    integrations: dict[str, Any] = dict(others)
    if all_ is not ...:
        integrations["All"] = all_
    if own is not ...:
        integrations["ClientSuccess"] = own
    result = destination_enabled(integrations, "ClientSuccess")
    if own is not ...:
        expected = own if isinstance(own, bool) else True  # an options object enables
    elif all_ is not ...:
        expected = all_ if isinstance(all_, bool) else True
    else:
        expected = True
    assert result is expected


@PROPERTY_SETTINGS
@given(aware_datetimes)
def test_property_parse_timestamp_reads_isoformat(dt):
    assert parse_timestamp(dt.isoformat()) == dt
    assert parse_timestamp(dt.isoformat()).utcoffset() == dt.utcoffset()
    assert parse_timestamp(dt.isoformat(timespec="milliseconds")) == dt.replace(
        microsecond=dt.microsecond // 1000 * 1000
    )
