"""The console's HTTP answers: every one carries the security headers (a strict
Content-Security-Policy, no framing, no sniffing, no caching, no referrer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

ROUTED_HEADER = "X-CS-Relay-Routed"  # streams.ops.admin's: a forwarded request is not forwarded again
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body,
        content_type="text/html",
        charset="utf-8",
        status=status,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def text(body: str, status: int) -> web.Response:
    return web.Response(status=status, text=body, headers=SECURITY_HEADERS)


def see_other(location: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location, **(headers or {})})


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def is_secure(request: web.Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
