"""An imitation of the CustomerSuccessBox JavaScript API (partner-contracts.md section 3).

`POST /api_js/v1_1/{identify|account|track|page}` with camelCase bodies, authorised by
`Authorization: Bearer {key}` or HTTP Basic with the key as user name.

Answers 200 `{"status": "ok"}`; 401 `{"error"}` for a missing or wrong key; 400
`{"errors": [...]}` listing every problem of the body; 404 `{"error"}` for any other
path. `productId` / `moduleId` longer than 64 characters are cut to 64, as CSB does.
Every call upserts the account (and the user, when it names one).
"""

from __future__ import annotations

import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from aiohttp import BasicAuth, web

from mockservers.recorder import identifier_text as _text
from mockservers.recorder import new_mock_app, utc_now

API = "/api_js/v1_1"
FEATURE_ID_MAX = 64
ENDPOINTS = ("identify", "account", "track", "page")
_NEEDS_USER = frozenset({"identify", "track", "page"})
_OBJECT_FIELDS = {"identify": "traits", "account": "traits", "track": "properties", "page": "properties"}


@dataclass
class CustomerSuccessBoxState:
    """What CustomerSuccessBox holds: accounts, users per account, events and page views."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        view = {"accounts": self.accounts, "users": self.users, "events": self.events, "pages": self.pages}
        return json.loads(json.dumps(view))

    def clear(self) -> None:
        self.accounts.clear()
        self.users.clear()
        self.events.clear()
        self.pages.clear()

    def _account(self, account_id: str) -> dict[str, Any]:
        return self.accounts.setdefault(account_id, {"traits": {}})

    def _user(self, account_id: str, user_id: str) -> dict[str, Any]:
        self._account(account_id)
        return self.users.setdefault(account_id, {}).setdefault(user_id, {"traits": {}})

    def apply(self, endpoint: str, body: dict[str, Any], received_at: str) -> None:
        """Record a validated call to `endpoint`."""
        account_id = _text(body["accountId"])
        user_id = _text(body.get("userId"))
        if endpoint == "account":
            self._account(account_id)["traits"].update(body.get("traits") or {})
            return
        user = self._user(account_id, user_id)
        if endpoint == "identify":
            user["traits"].update(body.get("traits") or {})
            return
        common = {"accountId": account_id, "userId": user_id}
        if endpoint == "track":
            self.events.append(
                {
                    **common,
                    "event": _text(body["event"]),
                    "properties": body.get("properties") or {},
                    "productId": _feature_id(body.get("productId")),
                    "moduleId": _feature_id(body.get("moduleId")),
                    "timestamp": body.get("timestamp"),
                    "received_at": received_at,
                }
            )
        else:
            self.pages.append(
                {
                    **common,
                    "name": body.get("name"),
                    "properties": body.get("properties") or {},
                    "timestamp": body.get("timestamp"),
                    "received_at": received_at,
                }
            )


API_KEY_KEY = web.AppKey("csb_api_key", str)
STATE_KEY = web.AppKey("csb_state", CustomerSuccessBoxState)


def _feature_id(value: Any) -> Any:
    """Feature identifiers are cut to 64 characters, as CustomerSuccessBox does."""
    return value[:FEATURE_ID_MAX] if isinstance(value, str) else value


def presented_key(authorization: str) -> str | None:
    """The API key carried by an `Authorization` header (Bearer, or Basic user name)."""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        try:
            return BasicAuth.decode(authorization.strip()).login or None
        except (ValueError, binascii.Error):
            return None
    return None


def authorised(request: web.Request) -> bool:
    key = presented_key(request.headers.get("Authorization", ""))
    return key is not None and hmac.compare_digest(key.encode(), request.app[API_KEY_KEY].encode())


def validate(endpoint: str, body: Any) -> list[str]:
    """Every problem of a call to `endpoint` (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors = []
    if _text(body.get("accountId")) is None:
        errors.append("accountId is required")
    if endpoint in _NEEDS_USER and _text(body.get("userId")) is None:
        errors.append("userId is required")
    if endpoint == "track" and _text(body.get("event")) is None:
        errors.append("event is required")
    object_field = _OBJECT_FIELDS[endpoint]
    if object_field in body and not isinstance(body[object_field], dict):
        errors.append(f"{object_field} must be an object")
    return errors


async def handle(request: web.Request) -> web.Response:
    """`POST /api_js/v1_1/{endpoint}`."""
    received_at = utc_now()
    if not authorised(request):
        return web.json_response({"error": "missing or invalid API key"}, status=401)
    endpoint = request.match_info["endpoint"]
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    errors = validate(endpoint, body)
    if errors:
        return web.json_response({"errors": errors}, status=400)
    request.app[STATE_KEY].apply(endpoint, body, received_at)
    return web.json_response({"status": "ok"})


def _error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def create_app(api_key: str) -> web.Application:
    """The CustomerSuccessBox imitation for one tenant whose POST API key is `api_key`."""
    state = CustomerSuccessBoxState()
    app = new_mock_app(state, _error_body)
    app[API_KEY_KEY] = api_key
    app[STATE_KEY] = state
    app.router.add_post(API + "/{endpoint:(" + "|".join(ENDPOINTS) + ")}", handle)
    return app


def from_env(env: Mapping[str, str]) -> web.Application:
    """The imitation for the key a worker would use (its variables)."""
    return create_app(env["CSB_API_KEY"])
