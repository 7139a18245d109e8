"""`POST /preview/{userId}` on the worker: what cs-relay would do with Segment messages of
one user now, decided by the worker that owns the user's partition (forwarded there like
`/users/{userId}`), against its tables and settings. Behind the admin token; nothing is
sent or written (`streams.core.preview`, `streams.runtime.previewing`).

Body: `{"messages": [<Segment message>, ...]}`, every message keyed by `{userId}` (its
userId, else anonymousId), at most `MAX_MESSAGES` and `MAX_BODY_BYTES`. Answer:
`{"results": [...]}`, one per message, as `cs-relay preview --json` prints them.

The console's "Try a message" page asks the same of the owner (`ask_owner`): a worker
that does not own a user posts that user's messages to the owner's endpoint, marked
routed (one hop) and with its own admin token, as `Admin.forward` does."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import aiohttp.web
from faust import web
from yarl import URL

from streams.core.message import InvalidMessage
from streams.core.previewtext import request_body
from streams.core.segment import parse
from streams.ops.admin import FORWARD_TIMEOUT, ROUTED_HEADER, Admin, error

MAX_MESSAGES = 100
MAX_BODY_BYTES = 1024 * 1024

Run = Callable[[Sequence[bytes]], list[dict[str, Any]]]


def messages_of(body: bytes, key: str) -> list[bytes]:
    """The request's messages, each re-encoded; ValueError says what is wrong."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the body is not JSON") from None
    items = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError('expected {"messages": [<Segment message>, ...]}')
    if len(items) > MAX_MESSAGES:
        raise ValueError(f"at most {MAX_MESSAGES} messages per request")
    raws = [json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8") for item in items]
    for number, raw in enumerate(raws, 1):
        try:
            owner = parse(raw).key
        except InvalidMessage:
            continue  # shown as refused at intake, like any invalid call
        if owner != key:
            raise ValueError(f"message {number} is for user {owner!r}, not {key!r}: one user per request")
    return raws


class PreviewUnavailable(Exception):
    """A user's messages cannot be previewed now (no owner, or it did not answer): why."""


async def ask_owner(
    http: aiohttp.ClientSession, owner: str, key: str, raws: Sequence[bytes], token: str
) -> list[dict[str, Any]]:
    """The previews of one user's `raws` by `owner`, the worker that owns the user: its
    `POST /preview/{key}`, marked routed (it answers itself or 503, never forwards again)."""
    target = URL(owner).with_path(f"/preview/{quote(key, safe='')}", encoded=True)
    headers = {ROUTED_HEADER: "1", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with http.post(
            target,
            data=request_body(raws),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
        ) as response:
            status, answer = response.status, await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        why = f"the worker that owns this user ({owner}) did not answer ({type(exc).__name__})"
        raise PreviewUnavailable(why) from None
    results = answer.get("results") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(results, list) or len(results) != len(raws):
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise PreviewUnavailable(f"the worker that owns this user ({owner}) answered {status}: {detail}")
    return results


def install(app: Any, admin: Admin, run: Run) -> None:
    async def handle(view: web.View, request: web.Request, userId: str) -> web.Response:
        try:
            body = await request.read()  # aiohttp refuses a body over its client_max_size, 1 MiB
        except aiohttp.web.HTTPRequestEntityTooLarge:
            return admin.respond(view, 413, error("too_large", f"at most {MAX_BODY_BYTES} bytes"))
        try:
            raws = messages_of(body, userId)
        except ValueError as exc:
            return admin.respond(view, 400, error("bad_request", str(exc)))
        return await admin.owned(
            view, request, admin.users, userId, lambda key: (200, {"results": run(raws)}), body=body
        )

    class PreviewView(web.View):
        async def post(self, request: web.Request, **match: str) -> web.Response:
            return await admin.serve(self, request, handle, match, open_=False)

    app.page("/preview/{userId}", name="cs_relay_preview")(PreviewView)
