"""An imitation of a receiver written for Segment's Webhooks destination.

`POST /webhook` with a Segment message as its JSON body. With a shared secret
configured (`WEBHOOK_SHARED_SECRET`, the same variable the worker signs with), the
request must carry `X-Signature`, the hex HMAC-SHA1 of the body under that secret.

Answers 200 `{"ok": true}`; 401 `{"ok": false, "error"}` for a missing or wrong
signature; 400 `{"ok": false, "error"}` for a body that is not a JSON object with a
Segment `type`; 404/405 `{"ok": false, "error"}` for any other path or method.
`GET /_mock/state` shows what it accepted: every message in order, and their
messageIds by type and by user.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streams.destinations.webhook import MOCK_PATH, signature
from streams.testing.recorder import identifier_text, new_mock_app, utc_now

TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})


@dataclass
class WebhookState:
    """What the receiver accepted, in the order it arrived."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        by_type: dict[str, list[Any]] = {}
        by_user: dict[str, list[dict[str, Any]]] = {}
        for entry in self.messages:
            message = entry["message"]
            by_type.setdefault(message["type"], []).append(message.get("messageId"))
            user = identifier_text(message.get("userId")) or identifier_text(message.get("anonymousId")) or ""
            by_user.setdefault(user, []).append({"type": message["type"], "messageId": message.get("messageId")})
        view = {"messages": self.messages, "by_type": by_type, "by_user": by_user}
        return json.loads(json.dumps(view))

    def clear(self) -> None:
        self.messages.clear()

    def add(self, message: dict[str, Any], received_at: str) -> None:
        self.messages.append({"message": message, "received_at": received_at})


SECRET_KEY = web.AppKey("webhook_shared_secret", str)
STATE_KEY = web.AppKey("webhook_state", WebhookState)


def problem(body: Any) -> str | None:
    """Why `body` is not a Segment message (None when it is one)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if body.get("type") not in TYPES:
        return "type must be one of " + ", ".join(sorted(TYPES))
    return None


def _failure(status: int, message: str) -> web.Response:
    return web.json_response(_error_body(message), status=status)


async def receive(request: web.Request) -> web.Response:
    """`POST /webhook`."""
    received_at = utc_now()
    raw = await request.read()
    secret = request.app[SECRET_KEY]
    if secret and not signature.verify(secret, raw, request.headers.get(signature.HEADER)):
        return _failure(401, f"missing or invalid {signature.HEADER}")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    error = problem(body)
    if error:
        return _failure(400, error)
    request.app[STATE_KEY].add(body, received_at)
    return web.json_response({"ok": True})


def _error_body(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def create_app(shared_secret: str = "") -> web.Application:
    """The receiver; with `shared_secret` it accepts only requests signed with it."""
    state = WebhookState()
    app = new_mock_app(state, _error_body)
    app[SECRET_KEY] = shared_secret
    app[STATE_KEY] = state
    app.router.add_post(MOCK_PATH, receive)
    return app


def from_env(env: Mapping[str, str]) -> web.Application:
    """The receiver for the secret a worker would sign with (its variable; none when unset or empty)."""
    return create_app((env.get("WEBHOOK_SHARED_SECRET") or "").strip())
