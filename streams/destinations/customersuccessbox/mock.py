"""An imitation of the CustomerSuccessBox JavaScript API (partner-contracts.md section 3).

`POST /api_js/v1_1/{identify|account|track|feature|page}` with camelCase bodies, authorised
by `Authorization: Bearer {key}` or HTTP Basic with the key as user name.

What it requires is what the vendor's SDKs require before they send (csb-node `src/CSB.js`,
csb-java `CSB.java`): `accountId` everywhere; `userId` on identify, track, feature (and
page); `event` on track; `productId`, `moduleId`, `featureId` on feature; a `type`, when
sent, matching the endpoint (`user` on identify). A feature call needs a `timestamp` whose
GMT date is the day it is received: CSB's server API (http-server-api/features) does not
aggregate backdated feature events, so the mock refuses them. `total`, when sent, is an
integer >= 0 (absent: 1; 0 is allowed, as documented).

Answers 200 `{"status": "ok"}`; 401 `{"error"}` for a missing or wrong key; 400
`{"errors": [...]}` listing every problem of the body; 404 `{"error"}` for any other
path. Feature identifiers longer than 64 characters are cut to 64, as CSB does.
Every call upserts the account (and the user, when it names one); `/_mock/state` shows
`features`: per account, product, module and feature, the usage total.
"""

from __future__ import annotations

import binascii
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import BasicAuth, web

from streams.core.timestamps import utc_date
from streams.testing.recorder import identifier_text as _text
from streams.testing.recorder import new_mock_app

API = "/api_js/v1_1"
FEATURE_ID_MAX = 64
ENDPOINTS = ("identify", "account", "track", "feature", "page")
TYPES = {"identify": "user", "account": "account", "track": "track", "feature": "feature", "page": "page"}
_NEEDS_USER = frozenset({"identify", "track", "feature", "page"})
_FEATURE_IDS = ("productId", "moduleId", "featureId")
_OBJECT_FIELDS = {"identify": "traits", "account": "traits", "track": "properties", "page": "properties"}
SAME_DAY_RULE = "backdated feature events are not aggregated"


@dataclass
class CustomerSuccessBoxState:
    """What CustomerSuccessBox holds: accounts, users per account, events, page views and
    feature usage (account -> product -> module -> feature -> total)."""

    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    pages: list[dict[str, Any]] = field(default_factory=list)
    features: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        view = {
            "accounts": self.accounts,
            "users": self.users,
            "events": self.events,
            "pages": self.pages,
            "features": self.features,
        }
        return json.loads(json.dumps(view))

    def clear(self) -> None:
        self.accounts.clear()
        self.users.clear()
        self.events.clear()
        self.pages.clear()
        self.features.clear()

    def _account(self, account_id: str) -> dict[str, Any]:
        return self.accounts.setdefault(account_id, {"traits": {}})

    def _user(self, account_id: str, user_id: str) -> dict[str, Any]:
        self._account(account_id)
        return self.users.setdefault(account_id, {}).setdefault(user_id, {"traits": {}})

    def apply(self, endpoint: str, body: dict[str, Any], received_at: str) -> None:
        """Record a validated call to `endpoint`."""
        account_id = _text(body["accountId"])
        user_id = _text(body.get("userId"))
        assert account_id is not None, "validate() requires accountId"
        if endpoint == "account":
            self._account(account_id)["traits"].update(body.get("traits") or {})
            return
        assert user_id is not None, "validate() requires userId on every endpoint but /account"
        user = self._user(account_id, user_id)
        if endpoint == "identify":
            user["traits"].update(body.get("traits") or {})
            return
        common = {"accountId": account_id, "userId": user_id}
        if endpoint == "feature":
            product, module, feature = (_feature_id(_text(body[name])) for name in _FEATURE_IDS)
            modules = self.features.setdefault(account_id, {}).setdefault(product, {})
            features = modules.setdefault(module, {})
            features[feature] = features.get(feature, 0) + body.get("total", 1)
        elif endpoint == "track":
            self.events.append(
                {
                    **common,
                    "event": _text(body["event"]),
                    "properties": body.get("properties") or {},
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
CLOCK_KEY: web.AppKey[Callable[[], datetime]] = web.AppKey("csb_clock")  # a Callable: typed here, not as t=


def _utc_now() -> datetime:
    return datetime.now(UTC)


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


def validate(endpoint: str, body: Any, today: date) -> list[str]:
    """Every problem of a call to `endpoint` received on GMT date `today` (empty when it
    is acceptable)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors = []
    if "type" in body and body["type"] != TYPES[endpoint]:
        errors.append(f'type must be "{TYPES[endpoint]}" on /{endpoint}')
    if _text(body.get("accountId")) is None:
        errors.append("accountId is required")
    if endpoint in _NEEDS_USER and _text(body.get("userId")) is None:
        errors.append("userId is required")
    if endpoint == "track" and _text(body.get("event")) is None:
        errors.append("event is required")
    if endpoint == "feature":
        errors += [f"{name} is required" for name in _FEATURE_IDS if _text(body.get(name)) is None]
        total = body.get("total", 1)
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            errors.append("total must be an integer >= 0")
    errors += _timestamp_problems(endpoint, body, today)
    object_field = _OBJECT_FIELDS.get(endpoint)
    if object_field and object_field in body and not isinstance(body[object_field], dict):
        errors.append(f"{object_field} must be an object")
    return errors


def _timestamp_problems(endpoint: str, body: dict[str, Any], today: date) -> list[str]:
    if "timestamp" not in body:
        return ["timestamp is required on a feature event"] if endpoint == "feature" else []
    try:
        day = utc_date(body["timestamp"])
    except ValueError:
        return ["timestamp must be an ISO-8601 date-time"]
    if endpoint == "feature" and day != today:
        return [
            f"timestamp's GMT date {day.isoformat()} is not the day the feature event is pushed "
            f"({today.isoformat()}): {SAME_DAY_RULE}"
        ]
    return []


async def handle(request: web.Request) -> web.Response:
    """`POST /api_js/v1_1/{endpoint}`."""
    now = request.app[CLOCK_KEY]().astimezone(UTC)
    received_at = now.isoformat(timespec="microseconds").replace("+00:00", "Z")  # sortable: fixed width
    if not authorised(request):
        return web.json_response({"error": "missing or invalid API key"}, status=401)
    endpoint = request.match_info["endpoint"]
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    errors = validate(endpoint, body, now.date())
    if errors:
        return web.json_response({"errors": errors}, status=400)
    request.app[STATE_KEY].apply(endpoint, body, received_at)
    return web.json_response({"status": "ok"})


def _error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def create_app(api_key: str, clock: Callable[[], datetime] = _utc_now) -> web.Application:
    """The CustomerSuccessBox imitation for one tenant whose POST API key is `api_key`;
    `clock` (aware, any zone) says when a call is received."""
    state = CustomerSuccessBoxState()
    app = new_mock_app(state, _error_body)
    app[API_KEY_KEY] = api_key
    app[STATE_KEY] = state
    app[CLOCK_KEY] = clock
    app.router.add_post(API + "/{endpoint:(" + "|".join(ENDPOINTS) + ")}", handle)
    return app


def from_env(env: Mapping[str, str]) -> web.Application:
    """The imitation for the key a worker would use (its variables)."""
    return create_app(env["CSB_API_KEY"])
