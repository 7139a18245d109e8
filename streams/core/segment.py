"""Segment spec messages: parsing and validation, pure and dependency-free.

cs-relay reads Segment calls (identify, group, track, page, screen, alias) from Kafka as
raw bytes. `parse` turns one record value into a `Message` or raises `InvalidMessage`
with a stable machine-readable `Reason` (the dead-letter reason) and a short readable
`detail` naming the offending field. `validate` applies the same rules to an object that
is already decoded (the HTTP ingest). Nothing here does I/O.

Rules, in the order they are checked (the first failure wins):

- the record is at most `MAX_MESSAGE_BYTES` bytes (OVERSIZED), checked before decoding;
- it is UTF-8 (NOT_UTF8) and JSON (INVALID_JSON; NaN/Infinity, numbers that overflow a
  float and strings holding an unpaired UTF-16 surrogate escape are refused too);
- containers nest at most `MAX_DEPTH` levels (TOO_DEEP);
- the top level is an object (NOT_AN_OBJECT);
- `type` is one of `MESSAGE_TYPES` (MISSING_FIELD / WRONG_TYPE / UNKNOWN_TYPE);
- `userId` / `anonymousId` are strings or numbers (numbers become strings, as Segment
  does) and at least one is non-empty (WRONG_TYPE / MISSING_FIELD);
- `messageId` is a string of at most 100 characters (WRONG_TYPE / MESSAGE_ID_TOO_LONG);
  when it is absent, null or empty, a deterministic id is derived from the content;
- `timestamp`, `sentAt`, `receivedAt`, `originalTimestamp` are ISO-8601 date-times
  (INVALID_TIMESTAMP);
- `context`, `integrations`, `traits`, `properties` are objects (WRONG_TYPE);
- per type: group needs `groupId`; track needs a non-empty string `event`; alias needs
  `previousId` and `userId`; page/screen `name` and `category` are strings;
- ids (`userId`, `anonymousId`, `previousId`, `groupId`, `context.groupId`) are at most
  `idlimits.MAX_ID_BYTES` bytes (ID_TOO_LONG), `event`, `name` and `category` at most
  `idlimits.MAX_NAME_BYTES` (NAME_TOO_LONG): they end up in state rows
  (streams.core.idlimits).

A JSON null counts as absent everywhere. Unknown extra fields are kept untouched in
`Message.raw`; the only change ever made to the decoded object is filling in a derived
`messageId`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from streams.core import idlimits
from streams.core.reasons import Reason  # intake's reasons: streams.core.reasons.INTAKE

__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ID_LENGTH",
    "MESSAGE_TYPES",
    "TIMESTAMP_FIELDS",
    "InvalidMessage",
    "Message",
    "Reason",
    "derive_message_id",
    "destination_enabled",
    "parse",
    "parse_timestamp",
    "validate",
]

MAX_MESSAGE_BYTES = 32 * 1024
MAX_MESSAGE_ID_LENGTH = 100
MAX_DEPTH = 64
MESSAGE_TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})
TIMESTAMP_FIELDS = ("timestamp", "sentAt", "receivedAt", "originalTimestamp")
OBJECT_FIELDS = ("context", "integrations", "traits", "properties")
DERIVED_ID_PREFIX = "csr-"
# Fields left out when deriving a messageId: they change between retries of one call.
_NOT_IN_DERIVED_ID = frozenset({"messageId", "sentAt", "receivedAt"})
_VALUE_PREVIEW = 40


class InvalidMessage(Exception):
    """A message that breaks the rules. `detail` never holds the whole payload."""

    reason: Reason
    detail: str
    field: str | None

    def __init__(self, reason: Reason, detail: str, field: str | None = None) -> None:
        super().__init__(reason, detail, field)
        self.reason = Reason(reason)
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Message:
    """A valid Segment message. Ids are normalised to strings; `raw` is the decoded
    object as received (plus a derived `messageId` when it had none)."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: str | None
    context: Mapping[str, Any]
    integrations: Mapping[str, Any]
    raw: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The id the message is keyed by: userId, else anonymousId (never empty)."""
        return self.user_id or self.anonymous_id or ""

    @property
    def traits(self) -> Mapping[str, Any]:
        return self.raw.get("traits") or {}

    @property
    def properties(self) -> Mapping[str, Any]:
        return self.raw.get("properties") or {}

    def _string(self, field: str) -> str | None:
        value = self.raw.get(field)
        return value if isinstance(value, str) else None

    @property
    def event(self) -> str | None:
        """The track call's event name."""
        return self._string("event")

    @property
    def name(self) -> str | None:
        """The page or screen name."""
        return self._string("name")

    @property
    def category(self) -> str | None:
        return self._string("category")

    @property
    def group_id(self) -> str | None:
        """The group call's groupId, as a string."""
        return _loose_id(self.raw.get("groupId"))

    @property
    def previous_id(self) -> str | None:
        """The alias call's previousId, as a string."""
        return _loose_id(self.raw.get("previousId"))

    @property
    def context_group_id(self) -> str | None:
        """`context.groupId`: the group/account the call was made for, if given."""
        return _loose_id(self.context.get("groupId"))


# --------------------------------------------------------------------------- entry points


def parse(data: bytes | bytearray | memoryview | str) -> Message:
    """Parse and validate one Kafka record value. Raises InvalidMessage."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMessage(Reason.NOT_UTF8, f"text is not valid Unicode at position {exc.start}") from None
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            Reason.OVERSIZED, f"message is {len(data)} bytes, more than the limit of {MAX_MESSAGE_BYTES}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            Reason.NOT_UTF8, f"message is not UTF-8: byte 0x{data[exc.start]:02x} at position {exc.start}"
        ) from None
    return _validate_decoded(_loads(text), surrogates_possible=_SURROGATE_ESCAPE.search(text) is not None)


def validate(obj: object) -> Message:
    """Validate an already-decoded message by the same rules as `parse` (the size limit
    applies to its compact JSON encoding). The caller's object is never modified: the
    Message holds a fresh copy."""
    if isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)
    if not isinstance(obj, dict):
        raise InvalidMessage(Reason.NOT_AN_OBJECT, f"a message must be a JSON object, not {_json_kind(obj)}")
    try:
        text = _dumps(obj)
    except RecursionError:
        raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise InvalidMessage(Reason.INVALID_JSON, f"message is not JSON-compatible: {_short(str(exc), 120)}") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate") from None
    if size > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            Reason.OVERSIZED, f"message is {size} bytes as JSON, more than the limit of {MAX_MESSAGE_BYTES}"
        )
    return _validate_decoded(_loads(text), surrogates_possible=False)


def derive_message_id(obj: Mapping[str, Any]) -> str:
    """A deterministic messageId for a message that has none: "csr-" + the SHA-256 of the
    canonical JSON (sorted keys, no whitespace, ASCII) of the message without `sentAt`,
    `receivedAt` and `messageId`, so a replay of the same call gets the same id and is
    deduplicated downstream."""
    content = {k: v for k, v in obj.items() if k not in _NOT_IN_DERIVED_ID}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DERIVED_ID_PREFIX + hashlib.sha256(canonical.encode("ascii")).hexdigest()


_TIMESTAMP = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?:(?P<z>Z)|(?P<sign>[+-])(?P<off_hour>\d{2})(?::?(?P<off_minute>\d{2}))?)?",
    re.ASCII,
)


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 date-time such as Segment's libraries send:
    `2024-05-01T10:20:30Z`, `...30.123Z`, `...30.123456+02:00`, `...30-0500`, `T10:20Z`.
    Any number of fraction digits is accepted (cut to microseconds). A time without an
    offset is taken as UTC. Dates without a time, week or ordinal dates and other
    separators are refused. Always returns an aware datetime. Raises ValueError."""
    if not isinstance(value, str):
        raise ValueError(f"a timestamp must be a string, not {type(value).__name__}")
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        raise ValueError(f"not an ISO-8601 date-time: {_preview(value)}")
    if m["z"] or not m["sign"]:
        tz = UTC
    else:
        off_hour, off_minute = int(m["off_hour"]), int(m["off_minute"] or 0)
        if off_hour > 23 or off_minute > 59:
            raise ValueError(f"UTC offset out of range: {_preview(value)}")
        offset = timedelta(hours=off_hour, minutes=off_minute)
        tz = timezone(-offset if m["sign"] == "-" else offset)
    fraction = (m["fraction"] or "")[:6].ljust(6, "0")
    return datetime(
        int(m["year"]),
        int(m["month"]),
        int(m["day"]),
        int(m["hour"]),
        int(m["minute"]),
        int(m["second"] or 0),
        int(fraction),
        tzinfo=tz,
    )


def destination_enabled(integrations: Mapping[str, Any] | None, name: str) -> bool:
    """Segment's `integrations` switches: the destination's own entry when present (an
    object of options counts as enabled, false disables), else `All` (default true)."""
    if not integrations:
        return True
    if name in integrations:
        return _switch(integrations[name])
    return _switch(integrations.get("All", True))


# --------------------------------------------------------------------------- internals


def _switch(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return bool(value)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large for a float")
    return value


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, our hooks, int digit limit
        raise InvalidMessage(Reason.INVALID_JSON, f"message is not valid JSON: {_short(str(exc), 120)}") from None


# Only a \uD800-\uDFFF escape can put a lone surrogate into text decoded from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_structure(obj: Any, surrogates_possible: bool) -> None:
    """Nesting depth (iteratively) and, when the text had surrogate escapes, unpaired
    surrogates in keys and strings."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidMessage(Reason.TOO_DEEP, f"message nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if surrogates_possible and any(_SURROGATE.search(k) for k in node):
                raise InvalidMessage(Reason.INVALID_JSON, "a key holds an unpaired UTF-16 surrogate escape")
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif surrogates_possible and isinstance(child, str) and _SURROGATE.search(child):
                raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate escape")


def _validate_decoded(obj: Any, *, surrogates_possible: bool) -> Message:
    if isinstance(obj, (dict, list)):
        _check_structure(obj, surrogates_possible)
    elif surrogates_possible and isinstance(obj, str) and _SURROGATE.search(obj):
        raise InvalidMessage(Reason.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate escape")
    if not isinstance(obj, dict):
        raise InvalidMessage(Reason.NOT_AN_OBJECT, f"a message must be a JSON object, not {_json_kind(obj)}")

    # type
    type_ = obj.get("type")
    if type_ is None:
        raise InvalidMessage(Reason.MISSING_FIELD, "message needs a 'type'", "type")
    if not isinstance(type_, str):
        raise InvalidMessage(Reason.WRONG_TYPE, f"'type' must be a string, not {_json_kind(type_)}", "type")
    if type_ not in MESSAGE_TYPES:
        raise InvalidMessage(
            Reason.UNKNOWN_TYPE,
            f"'type' {_preview(type_)} is not one of {', '.join(sorted(MESSAGE_TYPES))}",
            "type",
        )

    # identity
    user_id = _id_field(obj, "userId", type_)
    anonymous_id = _id_field(obj, "anonymousId", type_)
    if not user_id and not anonymous_id:
        raise InvalidMessage(
            Reason.MISSING_FIELD, f"{type_} message needs a non-empty 'userId' or 'anonymousId'", "userId"
        )

    # messageId
    message_id = obj.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidMessage(
            Reason.WRONG_TYPE, f"'messageId' must be a string, not {_json_kind(message_id)}", "messageId"
        )
    if message_id and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidMessage(
            Reason.MESSAGE_ID_TOO_LONG,
            f"'messageId' is {len(message_id)} characters, more than the limit of {MAX_MESSAGE_ID_LENGTH}",
            "messageId",
        )

    # timestamps
    for field in TIMESTAMP_FIELDS:
        value = obj.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidMessage(
                Reason.INVALID_TIMESTAMP,
                f"'{field}' must be an ISO-8601 string, not {_json_kind(value)}",
                field,
            )
        try:
            parse_timestamp(value)
        except ValueError:
            raise InvalidMessage(
                Reason.INVALID_TIMESTAMP, f"'{field}' is not an ISO-8601 date-time: {_preview(value)}", field
            ) from None

    # objects
    for field in OBJECT_FIELDS:
        value = obj.get(field)
        if value is not None and not isinstance(value, dict):
            raise InvalidMessage(Reason.WRONG_TYPE, f"'{field}' must be an object, not {_json_kind(value)}", field)

    # per type
    if type_ == "group":
        _required_id(obj, "groupId", type_)
    elif type_ == "track":
        event = obj.get("event")
        if event is not None and not isinstance(event, str):
            raise InvalidMessage(
                Reason.WRONG_TYPE, f"track message needs a string 'event', not {_json_kind(event)}", "event"
            )
        if not event:
            raise InvalidMessage(Reason.MISSING_FIELD, "track message needs a non-empty string 'event'", "event")
    elif type_ == "alias":
        _required_id(obj, "previousId", type_)
        if not user_id:
            raise InvalidMessage(Reason.MISSING_FIELD, "alias message needs a non-empty 'userId'", "userId")
    elif type_ in ("page", "screen"):
        for field in ("name", "category"):
            value = obj.get(field)
            if value is not None and not isinstance(value, str):
                raise InvalidMessage(
                    Reason.WRONG_TYPE, f"{type_} message '{field}' must be a string, not {_json_kind(value)}", field
                )

    too_long = idlimits.too_long(obj, _id_text)
    if too_long is not None:
        raise InvalidMessage(*too_long)
    if not message_id:
        message_id = derive_message_id(obj)
        obj["messageId"] = message_id
    context = obj.get("context")
    integrations = obj.get("integrations")
    timestamp = obj.get("timestamp")
    return Message(
        type=type_,
        message_id=message_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        context=context if context is not None else {},
        integrations=integrations if integrations is not None else {},
        raw=obj,
    )


def _id_text(value: Any) -> str | None:
    """A string or number id as text (None for null/other types). Integral floats lose
    their `.0`, as JavaScript prints them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return None


def _loose_id(value: Any) -> str | None:
    return _id_text(value) or None


def _id_field(obj: Mapping[str, Any], field: str, type_: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    text = _id_text(value)
    if text is None:
        raise InvalidMessage(
            Reason.WRONG_TYPE, f"{type_} message '{field}' must be a string or number, not {_json_kind(value)}", field
        )
    return text or None


def _required_id(obj: Mapping[str, Any], field: str, type_: str) -> str:
    text = _id_field(obj, field, type_)
    if not text:
        raise InvalidMessage(Reason.MISSING_FIELD, f"{type_} message needs a non-empty '{field}'", field)
    return text


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(value: str) -> str:
    """A short, ASCII-safe quote of a user-given value for a detail message."""
    return _short(ascii(value), _VALUE_PREVIEW)
