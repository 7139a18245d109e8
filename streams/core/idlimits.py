"""How many bytes an id or a name of a Segment call may have.

Segment documents no length for ids, only 32 KB per call. But ids end up in state rows
that outlive the call: a user's row keeps their groups and merged anonymous ids, a
group's `waiters` row the users waiting for it, every row is keyed by one; and names end
up in the requests an aggregation window keeps. A row larger than the changelog topic's
record limit is refused by the broker, which stops the worker on every restart. So
intake refuses (dead letter `id_too_long` / `name_too_long`) a call with an id or a name
longer than the limits below, measured in UTF-8 bytes of the text the worker uses (a
numeric id as its decimal text), and every row's bound is computed from them.

| field | limit |
| --- | --- |
| `userId`, `anonymousId`, `previousId`, `groupId`, `context.groupId` | `MAX_ID_BYTES` (256) |
| `messageId` | 100 characters (`validation.MAX_MESSAGE_ID_LENGTH`), so at most 400 bytes |
| `event` (track), `name` and `category` (page, screen) | `MAX_NAME_BYTES` (512) |

256 bytes hold an email address (at most 254) or any UUID, hash or database key with
room to spare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streams.core.reasons import Reason

MAX_ID_BYTES = 256
MAX_NAME_BYTES = 512
ID_FIELDS = ("userId", "anonymousId", "previousId", "groupId")
NAME_FIELDS = ("event", "name", "category")


def too_long(obj: Mapping[str, Any], text: Callable[[Any], str | None]) -> tuple[Reason, str, str] | None:
    """The reason, detail and field of the first id or name of `obj` over its limit."""
    found = id_too_long(obj, text)
    if found is not None:
        return Reason.ID_TOO_LONG, f"'{found[0]}' is {found[1]} bytes, more than the limit of {MAX_ID_BYTES}", found[0]
    found = name_too_long(obj)
    if found is not None:
        return (
            Reason.NAME_TOO_LONG,
            f"'{found[0]}' is {found[1]} bytes, more than the limit of {MAX_NAME_BYTES}",
            found[0],
        )
    return None


def id_too_long(obj: Mapping[str, Any], text: Callable[[Any], str | None]) -> tuple[str, int] | None:
    """The first id field of `obj` longer than MAX_ID_BYTES, with its size in bytes
    (`text`: how the worker reads an id: a string, or a number as its text)."""
    for name in ID_FIELDS:
        value = obj.get(name)
        if value is not None:
            size = _size(text(value), MAX_ID_BYTES)
            if size > MAX_ID_BYTES:
                return name, size
    context = obj.get("context")
    value = context.get("groupId") if isinstance(context, Mapping) else None
    if value is not None:
        size = _size(text(value), MAX_ID_BYTES)
        if size > MAX_ID_BYTES:
            return "context.groupId", size
    return None


def name_too_long(obj: Mapping[str, Any]) -> tuple[str, int] | None:
    """The first name field (a string) of `obj` longer than MAX_NAME_BYTES, with its size."""
    for name in NAME_FIELDS:
        value = obj.get(name)
        size = _size(value if isinstance(value, str) else None, MAX_NAME_BYTES)
        if size > MAX_NAME_BYTES:
            return name, size
    return None


def _size(text: str | None, limit: int) -> int:
    """The size of `text` in UTF-8 bytes where it may be over `limit`; else at most
    `limit` (a character is at most 4 bytes: a short text is not encoded)."""
    if not text:
        return 0
    if 4 * len(text) <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))
