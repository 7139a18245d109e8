"""An imitation of the ClientSuccess Usage API (partner-contracts.md section 2).

`POST /collector/1.0.0/projects/{sourceId}/events/{eventId}?api_key=...` with
`{"identity": {"organization": {"id", "name"}, "user": {"id", "name"?, "email"?}},
"value": number, "timestamp"?: ISO-8601}`.

Answers 200 `{"created": true}`; 401 `{"created": false, "error"}` for an unknown source
id or API key; 422 `{"created": false, "errors": [...]}` listing every rule the body
breaks; 404 `{"created": false, "error"}` for any other path.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from streams.testing.recorder import identifier_text as _text
from streams.testing.recorder import new_mock_app, utc_now

EVENTS_PATH = "/collector/1.0.0/projects/{sourceId}/events/{eventId}"


@dataclass(frozen=True)
class Credentials:
    source_id: str
    api_key: str

    def __repr__(self) -> str:  # never show the key
        return f"Credentials(source_id={self.source_id!r}, api_key='***')"

    def accepts(self, source_id: str, api_key: str) -> bool:
        same_source = hmac.compare_digest(source_id.encode(), self.source_id.encode())
        same_key = hmac.compare_digest(api_key.encode(), self.api_key.encode())
        return same_source and same_key


@dataclass
class ClientSuccessState:
    """What ClientSuccess holds: organizations with their users and events."""

    organizations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {"organizations": json.loads(json.dumps(self.organizations))}

    def clear(self) -> None:
        self.organizations.clear()

    def add_event(self, event_id: str, body: dict[str, Any], received_at: str) -> None:
        """Upsert the organization and user named in `body` and append the event."""
        identity = body["identity"]
        org_in, user_in = identity["organization"], identity["user"]
        org_id, user_id = _text(org_in["id"]), _text(user_in["id"])
        assert org_id is not None and user_id is not None, "validate_event() requires both ids"
        org = self.organizations.setdefault(org_id, {"name": None, "users": {}, "events": []})
        org["name"] = _text(org_in["name"])
        user = org["users"].setdefault(user_id, {"name": None, "email": None})
        for name in ("name", "email"):
            if user_in.get(name) is not None:
                user[name] = user_in[name]
        org["events"].append(
            {
                "event": event_id,
                "user_id": user_id,
                "value": body["value"],
                "timestamp": body.get("timestamp"),
                "received_at": received_at,
            }
        )


CREDENTIALS_KEY = web.AppKey("clientsuccess_credentials", Credentials)
STATE_KEY = web.AppKey("clientsuccess_state", ClientSuccessState)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _identity_errors(identity: dict[str, Any]) -> list[str]:
    errors = []
    organization = _object(identity.get("organization"))
    user = _object(identity.get("user"))
    if _text(organization.get("id")) is None:
        errors.append("identity.organization.id is required")
    if _text(organization.get("name")) is None:
        errors.append("identity.organization.name is required")
    if _text(user.get("id")) is None:
        errors.append("identity.user.id is required")
    return errors


def validate_event(body: Any) -> list[str]:
    """Every rule of the Usage API that `body` breaks (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors = []
    identity = body.get("identity")
    if identity is not None and not isinstance(identity, dict):
        errors.append("identity must be an object")
    else:
        errors.extend(_identity_errors(_object(identity)))
    value = body.get("value")
    if "value" not in body:
        errors.append("value is required")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        errors.append("value must be a number")
    if "timestamp" in body and not _is_iso8601(body["timestamp"]):
        errors.append("timestamp must be an ISO-8601 date-time")
    return errors


def _failure(status: int, **fields: Any) -> web.Response:
    return web.json_response({"created": False, **fields}, status=status)


async def add_event(request: web.Request) -> web.Response:
    """`POST /collector/1.0.0/projects/{sourceId}/events/{eventId}`."""
    received_at = utc_now()
    credentials = request.app[CREDENTIALS_KEY]
    if not credentials.accepts(request.match_info["sourceId"], request.query.get("api_key", "")):
        return _failure(401, error="unknown source id or api key")
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    errors = validate_event(body)
    if errors:
        return _failure(422, errors=errors)
    request.app[STATE_KEY].add_event(request.match_info["eventId"], body, received_at)
    return web.json_response({"created": True})


def _error_body(message: str) -> dict[str, Any]:
    return {"created": False, "error": message}


def create_app(source_id: str, api_key: str) -> web.Application:
    """The ClientSuccess imitation accepting one project (`source_id`) and its key."""
    state = ClientSuccessState()
    app = new_mock_app(state, _error_body)
    app[CREDENTIALS_KEY] = Credentials(source_id, api_key)
    app[STATE_KEY] = state
    app.router.add_post(EVENTS_PATH, add_event)
    return app


def from_env(env: Mapping[str, str]) -> web.Application:
    """The imitation for the project and key a worker would use (its variables)."""
    return create_app(env["CLIENTSUCCESS_SOURCE_ID"], env["CLIENTSUCCESS_API_KEY"])
