"""Small builders for Segment messages used across the unit tests."""

from __future__ import annotations

import json
from typing import Any

from streams.core.message import Message
from streams.core.segment import parse

_counter = 0


def msg(type_: str, user: str | None = "u1", **fields: Any) -> Message:
    """A parsed Segment message of `type_` for `user`, with a unique messageId."""
    global _counter
    _counter += 1
    body: dict[str, Any] = {"type": type_, "messageId": f"m-{_counter}", **fields}
    if user is not None and "userId" not in body:
        body["userId"] = user
    return parse(json.dumps(body).encode())


def json_bytes(m: Message) -> bytes:
    """`m.raw` as compact UTF-8 JSON; `parse` of it gives an equal Message."""
    return json.dumps(m.raw, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def raw(m: Message) -> str:
    return json_bytes(m).decode()
