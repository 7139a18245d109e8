"""Starting an aiohttp application on a host and port (`cs-relay ingest`, the partner
mocks), and the bearer-token check of the worker's and the ingest's operator endpoints."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from typing import Any

from aiohttp import web


async def serve(app: web.Application, host: str, port: int, **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start `app` on `host`:`port` (0 picks a free port); the runner (`cleanup()` stops
    it) and the bound port. No access log: request lines can carry credentials
    (`?api_key=`). `runner_options` go to `web.AppRunner`."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def client_url(host: str, port: int) -> str:
    """The base URL clients use for a server bound to `host`:`port` (a server on all
    interfaces is reached on this machine's loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a child process to bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the bearer token (no token: open).
    Both sides are hashed first, so the comparison takes the same time whatever the
    length or content of the guess."""
    if not token:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(_digest(given.strip()), _digest(token))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()
