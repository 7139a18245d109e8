"""Logging in and out: `GET /console/login` (the form), `POST /console/login` (the admin
token for a session cookie, throttled per client: `session.LoginThrottle`),
`POST /console/logout` (with the CSRF token).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from aiohttp import web

from streams.ops.console.layout import login_page
from streams.ops.console.responses import is_secure, page, see_other
from streams.ops.console.session import COOKIE, Session, client_of

if TYPE_CHECKING:
    from streams.ops.console.web import Console

log = logging.getLogger(__name__)


async def login_form(console: Console, request: web.Request, session: None) -> web.StreamResponse:
    if console.sessions.read(request.cookies.get(COOKIE)) is not None:
        return see_other("/console")
    return page(login_page())


async def login(console: Console, request: web.Request, session: None) -> web.StreamResponse:
    sessions = console.sessions
    client = client_of(request.remote)
    wait = console.throttle.wait(client)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        return page(login_page(f"Too many wrong tokens: try again in {retry} s."), 429, {"Retry-After": str(retry)})
    form = await request.post()
    if not sessions.token_matches(str(form.get("token") or "")):
        console.throttle.failed(client)
        log.warning("console: a login with a wrong token")
        return page(login_page("That is not the admin token."), 401)
    console.throttle.succeeded(client)
    cookie, _ = sessions.issue()
    header = sessions.cookie_header(cookie, max_age=int(sessions.lifetime), secure=is_secure(request))
    return see_other("/console", {"Set-Cookie": header})


async def logout(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    header = console.sessions.cookie_header("", max_age=0, secure=is_secure(request))
    return see_other("/console/login", {"Set-Cookie": header})
