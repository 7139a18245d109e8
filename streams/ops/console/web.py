"""The console's routes, on the worker's web server (Faust's aiohttp).

    GET  /console                       search (userId, anonymousId, groupId, account id)
    GET  /console/search?q=ID           matches; straight to the user when that is all
    GET  /console/users/{key}           a user: traits, group, remembered ids, waiting
                                        events, recent deliveries (on the owner worker)
    GET  /console/groups/{groupId}      a group: traits, users seen in it on this worker
    GET  /console/destinations          counts and the rate chart of the last hour
    GET  /console/dead-letters[?reason] the recent dead letters in the dead-letter topic
    POST /console/dead-letters/confirm  what a replay would send (CSRF)
    POST /console/dead-letters/replay   replay them (CSRF)
    GET  /console/login, POST /console/login, POST /console/logout (CSRF)
    GET  /console/static/{name}         the stylesheet and script (no data)

Every page but the login form and the static files needs the session cookie
(`session.py`): without it a GET answers 401 with the login form, a POST 401. A POST
that changes something needs the session's CSRF token too (403 without). With no
CS_RELAY_ADMIN_TOKEN every console path answers 404: the console is off.

A user's state lives with the worker that owns the user's partition: a user page asked
of another worker is forwarded there with `Admin.forward` (one hop), as the JSON
endpoints are, with the admin token and the browser's session id (`SESSION_HEADER`,
for the CSRF token of the page's forms), never the browser's cookie. Groups are in
every worker; the users seen in a group and the recent deliveries are each worker's
own (`journal.py`); the dead letters are every worker's, read from the dead-letter
topic (`deadletters.py`) and replayed as the CLI replays them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.core.deadletter import DeadLetterRecord
from streams.ops.console import render
from streams.ops.console.deadletters import Recent, RecentDeadLetters, read_recent
from streams.ops.console.journal import CHART_SECONDS, SAMPLE_INTERVAL, Journal, destination_counts
from streams.ops.console.render import Html
from streams.ops.console.session import COOKIE, SESSION_HEADER, LoginThrottle, Session, Sessions
from streams.ops.dlq import redacted_preview, replay_records

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}
ROUTED_HEADER = "X-CS-Relay-Routed"  # streams.ops.admin's: a forwarded request is not forwarded again
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PREVIEW_WIDTH = 160


@dataclass(frozen=True)
class Located:
    """Where a user key lives: here, at `owner` (another worker), or nowhere yet."""

    partition: int | None
    owner: str | None = None  # set: another worker's URL
    unavailable: str | None = None  # set: why no worker can answer now


@dataclass
class Sources:
    """What the console reads and does; the worker builds it from its Admin and
    runtime (`install`), unit tests from dicts and fakes."""

    token: str = field(repr=False)
    journal: Journal
    destinations: Mapping[str, str]  # key -> display name, the enabled ones
    users: Any  # tables: anything with .get
    pending: Any
    groups: Any
    status: Callable[[], Mapping[str, Any]]  # streams.ops.observe.status_document
    counts: Callable[[], Mapping[str, Mapping[str, int]]]  # journal.destination_counts now
    locate: Callable[[str], Located]
    # the request, the owner's URL, headers to add (Admin.forward: with the admin token)
    forward: Callable[[web.Request, str, Mapping[str, str]], Awaitable[web.StreamResponse]]
    dead_letters: Callable[[], Awaitable[Recent]]  # deadletters.read_recent: the topic's latest
    replay: Callable[[Sequence[DeadLetterRecord]], Awaitable[int]]  # dlq.replay_records
    secrets: Sequence[str] = field(default=(), repr=False)
    worker: str = ""
    input_topic: str = ""
    clock: Callable[[], float] = time.time


Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass
class Route:
    path: str
    name: str
    get: Handler | None = None
    post: Handler | None = None
    public: bool = False  # no session needed (login, static files)


def page(body: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=body,
        content_type="text/html",
        charset="utf-8",
        status=status,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def see_other(location: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location, **(headers or {})})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Console:
    sources: Sources
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.sources.token, clock=self.sources.clock)
        self.throttle = LoginThrottle(clock=lambda: self.sources.clock())
        self._static = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}
        journal = self.sources.journal
        self.recent = RecentDeadLetters(
            self.sources.dead_letters, self.sources.clock, stale_after=lambda: journal.last_dead_letter_at
        )

    # ------------------------------------------------------------------ dispatch

    def routes(self) -> list[Route]:
        return [
            Route("/console", "console_home", get=self.home),
            Route("/console/login", "console_login", get=self.login_form, post=self.login, public=True),
            Route("/console/logout", "console_logout", post=self.logout),
            Route("/console/search", "console_search", get=self.search),
            Route("/console/users/{key}", "console_user", get=self.user),
            Route("/console/groups/{group_id}", "console_group", get=self.group),
            Route("/console/destinations", "console_destinations", get=self.destinations),
            Route("/console/dead-letters", "console_dead_letters", get=self.dead_letters),
            Route("/console/dead-letters/confirm", "console_confirm", post=self.confirm),
            Route("/console/dead-letters/replay", "console_replay", post=self.replay),
            Route("/console/static/{name}", "console_static", get=self.static, public=True),
        ]

    async def handle(self, route: Route, handler: Handler, request: web.Request, **match: str) -> web.StreamResponse:
        """Every console request: off without a token, the session checked (and the
        CSRF token for a POST), errors as a page without details."""
        if not self.sessions.enabled:
            return web.Response(
                status=404, text="the console is off: set CS_RELAY_ADMIN_TOKEN to use it\n", headers=SECURITY_HEADERS
            )
        session = None
        if not route.public:
            session = self.sessions.read(request.cookies.get(COOKIE))
            if session is None and request.method == "GET" and request.headers.get(ROUTED_HEADER):
                # a page another worker forwards here (this worker owns the user)
                headers = request.headers
                session = self.sessions.forwarded(headers.get("Authorization"), headers.get(SESSION_HEADER))
            if session is None:
                if request.method == "GET":
                    return page(render.login_page("Log in to see this page."), 401)
                return web.Response(status=401, text="log in first\n", headers=SECURITY_HEADERS)
            if request.method == "POST":
                form = await request.post()
                if not self.sessions.csrf_ok(session, str(form.get("csrf") or "")):
                    return web.Response(
                        status=403, text="missing or wrong CSRF token: reload the page\n", headers=SECURITY_HEADERS
                    )
        try:
            return await handler(request, session, **match)
        except Exception as exc:  # a bug shows a page, not a stack trace
            log.exception("console %s %s failed", request.method, request.path)
            return page(
                render.message_page("Error", f"{type(exc).__name__}: see the worker log.", csrf=self._csrf(session)),
                500,
            )

    def mount(self, app: web.Application) -> None:
        """On a plain aiohttp application (unit tests)."""
        for route in self.routes():
            for method in ("get", "post"):
                handler = getattr(route, method)
                if handler is not None:
                    app.router.add_route(method.upper(), route.path, self._aiohttp(route, handler))

    def _aiohttp(self, route: Route, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self.handle(route, handler, request, **request.match_info)

        return serve

    def _csrf(self, session: Session | None) -> str:
        """The session's CSRF token ("" without a session: no forms to protect)."""
        return self.sessions.csrf(session) if session else ""

    # ------------------------------------------------------------------ session

    async def login_form(self, request: web.Request, session: None) -> web.StreamResponse:
        if self.sessions.read(request.cookies.get(COOKIE)) is not None:
            return see_other("/console")
        return page(render.login_page())

    async def login(self, request: web.Request, session: None) -> web.StreamResponse:
        client = request.remote or ""
        wait = self.throttle.wait(client)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return page(
                render.login_page(f"Too many wrong tokens: try again in {retry} s."), 429, {"Retry-After": str(retry)}
            )
        form = await request.post()
        if not self.sessions.token_matches(str(form.get("token") or "")):
            self.throttle.failed(client)
            log.warning("console: a login with a wrong token")
            return page(render.login_page("That is not the admin token."), 401)
        self.throttle.succeeded(client)
        cookie, _ = self.sessions.issue()
        return see_other(
            "/console",
            {
                "Set-Cookie": self.sessions.cookie_header(
                    cookie, max_age=int(self.sessions.lifetime), secure=_secure(request)
                )
            },
        )

    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        return see_other(
            "/console/login", {"Set-Cookie": self.sessions.cookie_header("", max_age=0, secure=_secure(request))}
        )

    async def static(self, request: web.Request, session: None, name: str) -> web.StreamResponse:
        if name not in self._static:
            return web.Response(status=404, text="not found\n", headers=SECURITY_HEADERS)
        return web.Response(
            body=self._static[name],
            content_type=STATIC_TYPES[name],
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"},
        )

    # ------------------------------------------------------------------ search

    async def home(self, request: web.Request, session: Session) -> web.StreamResponse:
        return page(render.search_page("", [], csrf=self._csrf(session), worker=self.sources.worker))

    async def search(self, request: web.Request, session: Session) -> web.StreamResponse:
        q = request.query.get("q", "").strip()
        if not q:
            return see_other("/console")
        s = self.sources
        matches: list[tuple[str, str, str]] = []
        if s.groups.get(q) is not None:
            matches.append(("group", q, render.path("groups", q)))
        for kind, ident, _at in s.journal.with_account(q):
            matches.append((f"{kind} with account id {q}", ident, render.path(f"{kind}s", ident)))
        where = s.locate(q)
        user_here = where.owner is None and where.unavailable is None and s.users.get(q) is not None
        if where.owner is not None and not matches:
            # Kept by another worker: its page there says whether the user exists.
            return see_other(render.path("users", q))
        if user_here:
            if not matches:
                return see_other(render.path("users", q))
            matches.insert(0, ("user", q, render.path("users", q)))
        elif where.owner is not None:
            matches.append(("user key (kept by another worker)", q, render.path("users", q)))
        return page(render.search_page(q, matches, csrf=self._csrf(session), worker=s.worker))

    # ------------------------------------------------------------------ user and group

    async def user(self, request: web.Request, session: Session, key: str) -> web.StreamResponse:
        s = self.sources
        where = s.locate(key)
        if where.unavailable is not None:
            return page(
                render.message_page("Try again", where.unavailable, csrf=self._csrf(session), worker=s.worker), 503
            )
        if where.owner is not None:
            if request.headers.get(ROUTED_HEADER):
                return page(
                    render.message_page(
                        "Try again",
                        "Partition ownership is moving; try again.",
                        csrf=self._csrf(session),
                        worker=s.worker,
                    ),
                    503,
                )
            response = await s.forward(request, where.owner, {SESSION_HEADER: session.sid})
            response.headers.update(SECURITY_HEADERS)
            return response
        data = s.users.get(key)
        if data is None:
            return page(
                render.message_page(
                    f"User {key}",
                    f"No user {key!r} is known: no call with this userId or anonymousId has arrived.",
                    csrf=self._csrf(session),
                    worker=s.worker,
                ),
                404,
            )
        return page(
            render.user_page(
                key,
                data,
                s.pending.get(key),
                s.journal.deliveries(key),
                destinations=s.destinations,
                now=s.clock(),
                csrf=self._csrf(session),
                worker=s.worker,
                partition=where.partition,
            )
        )

    async def group(self, request: web.Request, session: Session, group_id: str) -> web.StreamResponse:
        s = self.sources
        data = s.groups.get(group_id)
        users = s.journal.users_in_group(group_id)
        status = 200 if data is not None or users else 404
        return page(
            render.group_page(
                group_id,
                data,
                users,
                destinations=s.destinations,
                now=s.clock(),
                csrf=self._csrf(session),
                worker=s.worker,
            ),
            status,
        )

    # ------------------------------------------------------------------ destinations

    async def destinations(self, request: web.Request, session: Session) -> web.StreamResponse:
        s = self.sources
        now = s.clock()
        rates = s.journal.rates(now, current=s.counts())
        return page(
            render.destinations_page(
                s.status(), rates, now=now, span=CHART_SECONDS, csrf=self._csrf(session), worker=s.worker
            )
        )

    # ------------------------------------------------------------------ dead letters

    def _views(self, records: Iterable[DeadLetterRecord]) -> list[render.DeadLetterView]:
        s = self.sources
        return [
            render.DeadLetterView(r, redacted_preview(r, s.secrets, PREVIEW_WIDTH), s.journal.replays(r.identity))
            for r in records
        ]

    async def dead_letters(
        self, request: web.Request, session: Session, notice: str | None = None
    ) -> web.StreamResponse:
        s = self.sources
        reason = request.query.get("reason") or None
        replayed = _int(request.query.get("replayed"))
        if notice is None and replayed is not None:
            notice = f"Replayed {replayed} dead letter(s) to {s.input_topic or 'the input topic'}."
            missing = _int(request.query.get("missing"))
            if missing:
                notice += f" {missing} selected are no longer among the recent ones (use cs-relay dlq replay)."
        recent = await self.recent.get()
        return page(
            render.dead_letters_page(
                self._views(recent.with_reason(reason)),
                recent.reasons(),
                reason,
                now=s.clock(),
                csrf=self._csrf(session),
                worker=s.worker,
                notice=notice,
                topic=recent.topic,
                per_partition=recent.per_partition,
                complete=recent.complete,
                error=recent.error,
            )
        )

    async def confirm(self, request: web.Request, session: Session) -> web.StreamResponse:
        form = await request.post()
        reason = str(form.get("reason") or "") or None
        recent = await self.recent.get()
        if form.get("scope") == "filter":
            records = recent.with_reason(reason)
        else:
            records, _ = recent.by_identity([str(v) for v in form.getall("id", [])])
        if not records:
            return await self.dead_letters(request, session, notice="Select at least one dead letter to replay.")
        return page(
            render.confirm_page(
                self._views(records),
                reason,
                now=self.sources.clock(),
                csrf=self._csrf(session),
                worker=self.sources.worker,
            )
        )

    async def replay(self, request: web.Request, session: Session) -> web.StreamResponse:
        """Replay the dead letters the confirmation names (by identity in the topic),
        through `streams.ops.dlq.replay_records` as `cs-relay dlq replay` does."""
        s = self.sources
        form = await request.post()
        records, missing = (await self.recent.get()).by_identity([str(v) for v in form.getall("id", [])])
        replayed = await s.replay(records) if records else 0
        now = s.clock()
        for record in records:
            if record.identity:
                s.journal.replayed(record.identity, now)
        log.info("console: replayed %d dead letter(s) (%d no longer among the recent ones)", replayed, missing)
        return see_other(
            render.path(
                "dead-letters", reason=str(form.get("reason") or ""), replayed=replayed, missing=missing or None
            )
        )


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


# ------------------------------------------------------------------ the worker


def install(app: Any, admin: Any, journal: Journal) -> Console:
    """Register the console on the worker's Faust app (`streams.runtime.app`, after
    `admin.install`): its pages, and the timer that samples the counters for the chart.
    A replay is sent as the CLI sends it, with its own producer, to `settings.input_topic`."""
    from streams.ops.admin import owner_partition, owner_url, same_worker
    from streams.ops.observe import status_document

    settings = admin.settings
    canonical = str(app.conf.canonical_url)

    def locate(key: str) -> Located:
        if not admin.readiness()[0]:
            return Located(None, unavailable="This worker is starting or rebalancing; try again in a moment.")
        partition = owner_partition(key, admin.partitions)
        owner = owner_url(app.router.table_metadata(admin.users.name), partition)
        if owner is None:
            return Located(partition, unavailable=f"No worker owns partition {partition} yet; try again.")
        return Located(partition) if same_worker(owner, canonical) else Located(partition, owner=owner)

    async def forward(request: web.Request, owner: str, headers: Mapping[str, str]) -> web.StreamResponse:
        return await admin.forward(request["cs_relay_view"], request, owner, headers)

    async def replay(records: Sequence[DeadLetterRecord]) -> int:
        return await replay_records(settings, records)  # as `cs-relay dlq replay` sends them

    async def dead_letters() -> Recent:
        return await read_recent(settings)

    destinations = dict(admin.destinations)
    sources = Sources(
        token=settings.admin_token.reveal(),
        journal=journal,
        destinations=destinations,
        users=admin.users,
        pending=admin.pending,
        groups=admin.groups,
        status=lambda: status_document(admin.snapshot()),
        counts=lambda: destination_counts(admin.stats, destinations),
        locate=locate,
        forward=forward,
        dead_letters=dead_letters,
        replay=replay,
        secrets=settings.secrets(),
        worker=canonical,
        input_topic=settings.input_topic,
    )
    console = Console(sources)
    from faust import web as faust_web

    for route in console.routes():
        app.page(route.path, name=route.name)(_faust_view(console, route, faust_web))

    journal.sample(sources.counts(), time.time())

    async def sample() -> None:
        journal.sample(sources.counts(), time.time())

    sample.__name__ = sample.__qualname__ = "console_sample"
    app.timer(interval=SAMPLE_INTERVAL)(sample)
    return console


def _faust_view(console: Console, route: Route, faust_web: Any) -> type:
    def method(handler: Handler) -> Callable[..., Awaitable[Any]]:
        async def serve(view: Any, request: web.Request, **match: str) -> Any:
            request["cs_relay_view"] = view  # Admin.forward answers through the view
            return await console.handle(route, handler, request, **match)

        return serve

    namespace: dict[str, Any] = {}
    if route.get is not None:
        namespace["get"] = method(route.get)
    if route.post is not None:
        namespace["post"] = method(route.post)
    return type(f"{route.name.title().replace('_', '')}View", (faust_web.View,), namespace)


__all__ = ["Console", "Sources", "Located", "install", "Html", "SESSION_HEADER"]
