"""Pieces shared by both partner imitations: request recording, fault injection, admin API.

Every request to a partner path is recorded on the app (with the API key redacted) and
may be answered by an injected fault instead of the partner handler. Paths under
`/_mock/` are the test-facing admin API; they are neither recorded nor faulted:

- `GET /_mock/requests[?path_prefix=...]` recorded requests, in the order they were answered.
- `DELETE /_mock/requests` forget recorded requests and the partner's state.
- `GET /_mock/state` the partner's view of the data it accepted.
- `GET /_mock/faults`, `POST /_mock/faults`, `DELETE /_mock/faults` injected faults.

State lives on the `web.Application` (under `web.AppKey`s), never in module globals.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web

ADMIN_PREFIX = "/_mock"
REDACTED = "***"
_SECRET_HEADERS = frozenset({"authorization"})
_SECRET_QUERY_KEYS = frozenset({"api_key"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[str], dict[str, Any]]


class PartnerState(Protocol):
    """What the admin API needs from a partner's state."""

    def view(self) -> dict[str, Any]:
        """The partner's view of the data it accepted, as JSON-ready data."""
        ...

    def clear(self) -> None:
        """Forget everything."""
        ...


# ---------------------------------------------------------------- faults


_FAULT_FIELDS = frozenset({"status", "count", "share", "retry_after", "latency_ms", "path_prefix"})


class FaultError(ValueError):
    """A fault definition that cannot be used."""


@dataclass
class Fault:
    """One injected fault: an error answer and/or added latency for matching requests."""

    id: int
    status: int | None = None
    count: int | None = None
    remaining: int | None = None
    share: float | None = None
    retry_after: float | None = None
    latency_ms: float = 0.0
    path_prefix: str = ""

    def applies_to(self, path: str) -> bool:
        return path.startswith(self.path_prefix) and self.remaining != 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "count": self.count,
            "remaining": self.remaining,
            "share": self.share,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "path_prefix": self.path_prefix,
        }


def _number(spec: dict[str, Any], name: str) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaultError(f"{name} must be a number")
    return value


def parse_fault(spec: Any, fault_id: int) -> Fault:
    """A `Fault` from its JSON definition; raises `FaultError` when it is unusable."""
    if not isinstance(spec, dict):
        raise FaultError("a fault must be a JSON object")
    unknown = sorted(set(spec) - _FAULT_FIELDS)
    if unknown:
        raise FaultError(f"unknown fault fields: {', '.join(unknown)}")
    status, count = _number(spec, "status"), _number(spec, "count")
    share, retry_after = _number(spec, "share"), _number(spec, "retry_after")
    latency_ms = _number(spec, "latency_ms")
    path_prefix = spec.get("path_prefix") or ""
    if status is not None and (status != int(status) or not 200 <= status <= 599):
        raise FaultError("status must be an HTTP status code between 200 and 599")
    if count is not None and (count != int(count) or count < 1):
        raise FaultError("count must be a positive integer")
    if share is not None and not 0 <= share <= 1:
        raise FaultError("share must be between 0 and 1")
    if retry_after is not None and retry_after < 0:
        raise FaultError("retry_after must not be negative")
    if latency_ms is not None and latency_ms < 0:
        raise FaultError("latency_ms must not be negative")
    if not isinstance(path_prefix, str):
        raise FaultError("path_prefix must be a string")
    if status is None and not latency_ms:
        raise FaultError("a fault needs a status or a latency_ms")
    return Fault(
        id=fault_id,
        status=int(status) if status is not None else None,
        count=int(count) if count is not None else None,
        remaining=int(count) if count is not None else None,
        share=share,
        retry_after=retry_after,
        latency_ms=latency_ms or 0.0,
        path_prefix=path_prefix,
    )


@dataclass
class FaultState:
    """The faults currently injected into one mock server."""

    faults: list[Fault] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    next_id: int = 1

    def add(self, spec: Any) -> Fault:
        fault = parse_fault(spec, self.next_id)
        self.next_id += 1
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def pick(self, path: str) -> tuple[float, Fault | None]:
        """Added latency (ms) and the fault that answers (if any) for a request to `path`.

        Faults are consulted in the order they were added. Every matching latency
        applies; the first matching status fault answers. A fault that fires uses up
        one of its `count`; exhausted faults are removed.
        """
        delay_ms, answer = 0.0, None
        for fault in self.faults:
            if not fault.applies_to(path):
                continue
            if fault.status is not None and answer is not None:
                continue
            if fault.share is not None and not self.rng.random() < fault.share:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            delay_ms += fault.latency_ms
            if fault.status is not None:
                answer = fault
        self.faults[:] = [f for f in self.faults if f.remaining != 0]
        return delay_ms, answer


# ---------------------------------------------------------------- app keys


RECORDS_KEY = web.AppKey("mock_records", list[dict[str, Any]])
FAULTS_KEY = web.AppKey("mock_faults", FaultState)
STATE_KEY = web.AppKey("mock_partner_state", PartnerState)
ERROR_BODY_KEY: web.AppKey[ErrorBody] = web.AppKey("mock_error_body")  # a Callable: typed here, not as t=


def is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def identifier_text(value: Any) -> str | None:
    """A non-empty identifier as text (strings and numbers), else None."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def utc_now() -> str:
    """The current time as ISO-8601 UTC with a `Z` suffix."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def error_response(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON error answer shaped the way this partner shapes its errors."""
    body_of: ErrorBody = request.app[ERROR_BODY_KEY]
    return web.json_response(body_of(message), status=status, headers=headers)


# ---------------------------------------------------------------- middlewares


def _redacted_headers(request: web.Request) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in request.headers.items()}


def _redacted_query(request: web.Request) -> dict[str, str]:
    return {k: (REDACTED if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in request.query.items()}


def _json_or_none(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


@web.middleware
async def record_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every partner request with the status it was answered with."""
    if is_admin(request.path):
        return await handler(request)
    received_at = utc_now()
    raw, status = b"", 500
    try:
        raw = await request.read()  # cached by aiohttp: handlers can read the body again
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[RECORDS_KEY].append(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.rel_url.raw_path,
                "query": _redacted_query(request),
                "headers": _redacted_headers(request),
                "json": _json_or_none(raw),
                "status": status,
                "received_at": received_at,
            }
        )


@web.middleware
async def json_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer aiohttp's own errors (unknown path, wrong method, ...) with a JSON body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(request, exc.status, (exc.reason or "error").lower(), keep)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Delay and/or answer partner requests as the injected faults say."""
    if is_admin(request.path):
        return await handler(request)
    delay_ms, fault = request.app[FAULTS_KEY].pick(request.path)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    if fault is None or fault.status is None:
        return await handler(request)
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = _seconds_text(fault.retry_after)
    return error_response(request, fault.status, f"injected fault: {_phrase(fault.status)}", headers)


def _seconds_text(seconds: float) -> str:
    """`Retry-After` delta-seconds: an integer when whole, else a decimal."""
    return str(int(seconds)) if seconds == int(seconds) else repr(float(seconds))


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def new_mock_app(state: PartnerState, error_body: ErrorBody) -> web.Application:
    """An application with recording, JSON errors, fault injection and the admin API.

    The caller adds the partner's own routes.
    """
    app = web.Application(middlewares=[record_middleware, json_error_middleware, fault_middleware])
    app[RECORDS_KEY] = []
    app[FAULTS_KEY] = FaultState()
    app[STATE_KEY] = state
    app[ERROR_BODY_KEY] = error_body
    add_admin_routes(app)
    return app


# ---------------------------------------------------------------- admin API


async def _list_requests(request: web.Request) -> web.Response:
    prefix = request.query.get("path_prefix", "")
    records = [r for r in request.app[RECORDS_KEY] if r["path"].startswith(prefix)]
    return web.json_response(records)


async def _clear_requests(request: web.Request) -> web.Response:
    records = request.app[RECORDS_KEY]
    cleared = len(records)
    records.clear()
    request.app[STATE_KEY].clear()
    return web.json_response({"cleared": cleared})


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].view())


def _faults_json(state: FaultState) -> list[dict[str, Any]]:
    return [f.to_json() for f in state.faults]


async def _list_faults(request: web.Request) -> web.Response:
    return web.json_response(_faults_json(request.app[FAULTS_KEY]))


async def _add_faults(request: web.Request) -> web.Response:
    state = request.app[FAULTS_KEY]
    try:
        spec = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    specs = spec if isinstance(spec, list) else [spec]
    try:
        for s in specs:  # validate all before adding any
            parse_fault(s, 0)
    except FaultError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for s in specs:
        state.add(s)
    return web.json_response(_faults_json(state))


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    return web.json_response([])


def add_admin_routes(app: web.Application) -> None:
    """Add the `/_mock/...` admin API to `app` (which needs the keys `new_mock_app` sets)."""
    app.router.add_get(ADMIN_PREFIX + "/requests", _list_requests)
    app.router.add_delete(ADMIN_PREFIX + "/requests", _clear_requests)
    app.router.add_get(ADMIN_PREFIX + "/state", _state)
    app.router.add_get(ADMIN_PREFIX + "/faults", _list_faults)
    app.router.add_post(ADMIN_PREFIX + "/faults", _add_faults)
    app.router.add_delete(ADMIN_PREFIX + "/faults", _clear_faults)
