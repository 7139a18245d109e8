"""The Host allow-list of the worker's web server (issue 22, finding 10).

DNS rebinding: a page of another site, whose name is made to resolve to 127.0.0.1,
reads a server on this machine's loopback as if it were its own site, and a worker on
loopback may run without the admin token. Such a request carries the other site's name
in `Host`, so the worker answers only to the names that are its own:

* `localhost` and any loopback address (`127.0.0.0/8`, `::1`);
* its bind address (CS_RELAY_WEB_HOST) and advertised host (CS_RELAY_WEB_ADVERTISED_HOST);
* the names and addresses in CS_RELAY_WEB_ALLOWED_HOSTS (comma-separated: a proxy's
  name, a Service name).

Any other `Host` gets 403 before any handler runs. A server bound to every address
(`0.0.0.0`, `::`: a container, which needs the admin token) cannot know the names that
reach it, so there the check is on only when CS_RELAY_WEB_ALLOWED_HOSTS is set. The
port is not compared (the browser's origin already includes it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from streams.settingchecks import WILDCARD_HOSTS
from streams.settings import Settings

REFUSED = (
    "this worker does not answer to that Host: it answers to localhost, its own addresses "
    "and the names in CS_RELAY_WEB_ALLOWED_HOSTS\n"
)


def normal_host(name: str) -> str:
    """A host name or address as compared: lower case, no brackets, no trailing dot."""
    return name.strip().strip("[]").rstrip(".").lower()


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The names the worker answers to, or None: no check (bound to every address, and
    CS_RELAY_WEB_ALLOWED_HOSTS not set)."""
    if settings.web_host.strip("[]") in WILDCARD_HOSTS and not settings.web_allowed_hosts:
        return None
    names = {"localhost", settings.advertised_web_host, *settings.web_allowed_hosts}
    if settings.web_host.strip("[]") not in WILDCARD_HOSTS:
        names.add(settings.web_host)
    return frozenset(normal_host(name) for name in names)


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a request's `Host` header names this worker (no header: a client that is
    not a browser, which DNS rebinding needs)."""
    if allowed is None or header is None:
        return True
    host = host_of(header)
    if host is None:
        return False
    if host in allowed:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str | None:
    """The host of a `Host` header (`name`, `name:port`, `[v6]:port`), normalised; None
    for anything else (user info, a path, spaces...)."""
    text = header.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            host = text
        elif not port.isdigit():
            return None
    host = normal_host(host)
    return host if host and set(host) <= _HOST_CHARS else None


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_:")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_guard(allowed: frozenset[str] | None) -> Any:
    """An aiohttp middleware answering 403 to a request whose Host is not allowed."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), allowed):
            return web.Response(
                status=403,
                text=REFUSED,
                headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
            )
        return await handler(request)

    return guard
