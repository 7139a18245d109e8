"""Small builders for Segment messages used across the unit tests."""

from __future__ import annotations

import json
from typing import Any

from streams.core.segment import Message, parse

_counter = 0


def msg(type_: str, user: str | None = "u1", **fields: Any) -> Message:
    """A parsed Segment message of `type_` for `user`, with a unique messageId."""
    global _counter
    _counter += 1
    body: dict[str, Any] = {"type": type_, "messageId": f"m-{_counter}", **fields}
    if user is not None and "userId" not in body:
        body["userId"] = user
    return parse(json.dumps(body).encode())


def raw(m: Message) -> str:
    return m.to_json_bytes().decode()
