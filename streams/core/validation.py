"""The rules a decoded Segment call's fields must meet, turning it into a `Message`.

`check_fields` takes a JSON object (already decoded, within the size and depth bounds:
streams.core.segment) and checks, in this order (the first failure wins):

- `type` is one of `MESSAGE_TYPES` (MISSING_FIELD / WRONG_TYPE / UNKNOWN_TYPE);
- `userId` / `anonymousId` are strings or numbers (numbers become strings, as Segment
  does) and at least one is non-empty (WRONG_TYPE / MISSING_FIELD);
- `messageId` is a string of at most 100 characters (WRONG_TYPE / MESSAGE_ID_TOO_LONG);
  when it is absent, null or empty, a deterministic id is derived from the content
  (`derive_message_id`);
- `timestamp`, `sentAt`, `receivedAt`, `originalTimestamp` are ISO-8601 date-times
  (INVALID_TIMESTAMP; streams.core.timestamps.parse_timestamp);
- `context`, `integrations`, `traits`, `properties` are objects (WRONG_TYPE);
- per type: group needs `groupId`; track needs a non-empty string `event`; alias needs
  `previousId` and `userId`; page/screen `name` and `category` are strings;
- ids (`userId`, `anonymousId`, `previousId`, `groupId`, `context.groupId`) are at most
  `idlimits.MAX_ID_BYTES` bytes (ID_TOO_LONG), `event`, `name` and `category` at most
  `idlimits.MAX_NAME_BYTES` (NAME_TOO_LONG): they end up in state rows
  (streams.core.idlimits).

A JSON null counts as absent everywhere. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.core import idlimits
from streams.core.detail import json_kind, preview
from streams.core.message import InvalidMessage, Message, context_group_id, id_text
from streams.core.reasons import Reason
from streams.core.timestamps import parse_timestamp, read_timestamp

__all__ = [
    "MAX_MESSAGE_ID_LENGTH",
    "MESSAGE_TYPES",
    "TIMESTAMP_FIELDS",
    "check_fields",
    "derive_message_id",
]

MAX_MESSAGE_ID_LENGTH = 100
MESSAGE_TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})
TIMESTAMP_FIELDS = ("timestamp", "sentAt", "receivedAt", "originalTimestamp")
OBJECT_FIELDS = ("context", "integrations", "traits", "properties")
DERIVED_ID_PREFIX = "csr-"
# Fields left out when deriving a messageId: they change between retries of one call.
_NOT_IN_DERIVED_ID = frozenset({"messageId", "sentAt", "receivedAt"})


def derive_message_id(obj: Mapping[str, Any]) -> str:
    """A deterministic messageId for a message that has none: "csr-" + the SHA-256 of the
    canonical JSON (sorted keys, no whitespace, ASCII) of the message without `sentAt`,
    `receivedAt` and `messageId`, so a replay of the same call gets the same id and is
    deduplicated downstream."""
    content = {k: v for k, v in obj.items() if k not in _NOT_IN_DERIVED_ID}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return DERIVED_ID_PREFIX + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def check_fields(obj: dict[str, Any]) -> Message:
    """The Message `obj` makes, by the rules above; fills in a derived `messageId`
    when it has none (the only change ever made to it). Raises InvalidMessage."""
    # type
    type_ = obj.get("type")
    if type_ is None:
        raise InvalidMessage(Reason.MISSING_FIELD, "message needs a 'type'", "type")
    if not isinstance(type_, str):
        raise InvalidMessage(Reason.WRONG_TYPE, f"'type' must be a string, not {json_kind(type_)}", "type")
    if type_ not in MESSAGE_TYPES:
        raise InvalidMessage(
            Reason.UNKNOWN_TYPE,
            f"'type' {preview(type_)} is not one of {', '.join(sorted(MESSAGE_TYPES))}",
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
            Reason.WRONG_TYPE, f"'messageId' must be a string, not {json_kind(message_id)}", "messageId"
        )
    if message_id and len(message_id) > MAX_MESSAGE_ID_LENGTH:
        raise InvalidMessage(
            Reason.MESSAGE_ID_TOO_LONG,
            f"'messageId' is {len(message_id)} characters, more than the limit of {MAX_MESSAGE_ID_LENGTH}",
            "messageId",
        )

    # timestamps (`timestamp` read once for every later stage: Message.moment)
    stamp: tuple[datetime, str] | None = None
    for field in TIMESTAMP_FIELDS:
        value = obj.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidMessage(
                Reason.INVALID_TIMESTAMP,
                f"'{field}' must be an ISO-8601 string, not {json_kind(value)}",
                field,
            )
        try:
            if field == "timestamp":
                stamp = read_timestamp(value)
            else:
                parse_timestamp(value)
        except ValueError:
            raise InvalidMessage(
                Reason.INVALID_TIMESTAMP, f"'{field}' is not an ISO-8601 date-time: {preview(value)}", field
            ) from None

    # objects
    for field in OBJECT_FIELDS:
        value = obj.get(field)
        if value is not None and not isinstance(value, dict):
            raise InvalidMessage(Reason.WRONG_TYPE, f"'{field}' must be an object, not {json_kind(value)}", field)

    # per type
    if type_ == "group":
        _required_id(obj, "groupId", type_)
    elif type_ == "track":
        event = obj.get("event")
        if event is not None and not isinstance(event, str):
            raise InvalidMessage(
                Reason.WRONG_TYPE, f"track message needs a string 'event', not {json_kind(event)}", "event"
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
                    Reason.WRONG_TYPE, f"{type_} message '{field}' must be a string, not {json_kind(value)}", field
                )

    too_long = idlimits.too_long(obj, id_text)
    if too_long is not None:
        raise InvalidMessage(*too_long)
    if not message_id:
        message_id = derive_message_id(obj)
        obj["messageId"] = message_id
    context = obj.get("context")
    if context is None:
        context = {}
    integrations = obj.get("integrations")
    timestamp = obj.get("timestamp")
    return Message(
        type=type_,
        message_id=message_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        context=context,
        integrations=integrations if integrations is not None else {},
        raw=obj,
        moment=stamp[0] if stamp is not None else None,
        utc_timestamp=stamp[1] if stamp is not None else None,
        context_group_id=context_group_id(context),
    )


def _id_field(obj: Mapping[str, Any], field: str, type_: str) -> str | None:
    value = obj.get(field)
    if value is None:
        return None
    text = id_text(value)
    if text is None:
        raise InvalidMessage(
            Reason.WRONG_TYPE, f"{type_} message '{field}' must be a string or number, not {json_kind(value)}", field
        )
    return text or None


def _required_id(obj: Mapping[str, Any], field: str, type_: str) -> str:
    text = _id_field(obj, field, type_)
    if not text:
        raise InvalidMessage(Reason.MISSING_FIELD, f"{type_} message needs a non-empty '{field}'", field)
    return text
