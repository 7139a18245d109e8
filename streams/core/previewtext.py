"""The input and the words of a preview, shared by `cs-relay preview` and the console's
"Try a message" page (`streams.core.preview` decides; this reads what to preview,
groups it per user for the workers that own the users, and says each outcome in the
same words wherever it is shown)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streams.core.message import InvalidMessage
from streams.core.preview import Preview
from streams.core.segment import parse


class PreviewInputError(ValueError):
    """The input is not Segment messages as JSON: the message says where."""


def read_messages(text: str) -> list[bytes]:
    """The messages of a text: one JSON object, a JSON array of them, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise PreviewInputError("no message in the input")
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [_encode(whole)]
    if isinstance(whole, list):
        return [_encode(item) for item in whole]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise PreviewInputError(f"line {number}: not JSON ({exc.msg})") from None
            out.append(line.strip().encode("utf-8"))
    return out


def _encode(item: Any) -> bytes:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def per_user(raws: Sequence[bytes]) -> tuple[dict[str, list[int]], dict[int, dict[str, Any]]]:
    """The indexes of each user's messages, in order (each user's are previewed
    together, by the worker that owns the user), and the results of the messages that
    do not parse (refused at intake, as the worker would dead-letter them)."""
    by_user: dict[str, list[int]] = {}
    invalid: dict[int, dict[str, Any]] = {}
    for index, raw in enumerate(raws):
        try:
            by_user.setdefault(parse(raw).key, []).append(index)
        except InvalidMessage as exc:
            why = f"{exc.reason.value}: {exc.detail}"
            refused = Preview(index, None, None, "(not a valid Segment call)", invalid=why)
            invalid[index] = refused.to_dict(lambda key, request: {})
    return by_user, invalid


def request_body(raws: Sequence[bytes]) -> bytes:
    """The body of a worker's `POST /preview/{userId}` for these messages (one user's)."""
    return json.dumps({"messages": [json.loads(raw) for raw in raws]}).encode("utf-8")


def heading(result: Mapping[str, Any]) -> str:
    """`1. track 'Signed In' (user 'u1', messageId 'm1')`."""
    where = f"user {result['user']!r}, messageId {result['messageId']!r}" if "user" in result else "not routed"
    return f"{result['index'] + 1}. {result['call']} ({where})"


def outcome_line(outcome: Mapping[str, Any]) -> str:
    """One destination's outcome in words (the request's headers and body apart)."""
    verdict, reason, request = outcome["verdict"], outcome.get("reason", ""), outcome.get("request")
    target = f"{request['method']} {request['url']}" if request else ""
    if verdict == "send":
        return f"sent now{f' ({reason})' if reason else ''}: {target}"
    if verdict == "aggregate":
        return f"aggregated ({reason}): {target}"
    if verdict == "release":
        return f"releases held event {outcome.get('messageId')!r}: {target}"
    word = {"hold": "held", "skip": "skipped", "refuse": "refused (dead-lettered)"}[verdict]
    about = f" event {outcome['messageId']!r}" if outcome.get("messageId") else ""
    return f"{word}{about}: {reason}"


def summary(results: Sequence[Mapping[str, Any]]) -> str:
    delivered = sum(1 for r in results if r["delivered"])
    return f"{delivered} of {len(results)} message(s) would be delivered (neither held nor refused)"
