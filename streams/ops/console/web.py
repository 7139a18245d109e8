"""The console's routes and dispatch, on the worker's web server (Faust's aiohttp);
each page's handler and HTML are in `pages/`.

    GET  /console                       search (userId, anonymousId, groupId, account id)
    GET  /console/search?q=ID           matches; straight to the user when that is all
    GET  /console/users/{key}           a user: traits, group, remembered ids, waiting
                                        events, recent deliveries (on the owner worker)
    GET  /console/groups/{groupId}      a group: traits, users seen in it on this worker
    GET  /console/destinations          counts and the rate chart of the last hour
    GET  /console/dead-letters[?reason] the recent dead letters in the dead-letter topic
    POST /console/dead-letters/confirm  what a replay would send (CSRF)
    POST /console/dead-letters/replay   replay them (CSRF)
    GET  /console/try                   "Try a message": a form for Segment messages
    POST /console/try                   what each destination would receive (CSRF);
                                        nothing is sent or written
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
topic (`deadletters.py`) and replayed as the CLI replays them. "Try a message" asks
each user's owner to preview that user's messages (`streams.ops.preview_api`), as
`cs-relay preview --url` does.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from streams.core.deadletter import DeadLetterRecord
from streams.ops.console.deadletters import Recent, RecentDeadLetters, read_recent
from streams.ops.console.journal import Journal
from streams.ops.console.layout import login_page, message_page
from streams.ops.console.pages import deadletters, destinations, group, login, replay, search, trymessage, user
from streams.ops.console.rates import SAMPLE_INTERVAL, destination_counts
from streams.ops.console.responses import ROUTED_HEADER, SECURITY_HEADERS, page, text
from streams.ops.console.session import COOKIE, SESSION_HEADER, LoginThrottle, Session, Sessions
from streams.ops.console.sources import Located, Sources
from streams.ops.dlq import replay_records

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass
class Route:
    path: str
    name: str
    get: Handler | None = None
    post: Handler | None = None
    public: bool = False  # no session needed (login, static files)


@dataclass
class Console:
    sources: Sources
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.sources.token, clock=self.sources.clock)
        self.throttle = LoginThrottle(clock=lambda: self.sources.clock())
        self.static_files = {name: (STATIC / name).read_bytes() for name in STATIC_TYPES}
        journal = self.sources.journal
        self.recent = RecentDeadLetters(
            self.sources.dead_letters, self.sources.clock, stale_after=lambda: journal.last_dead_letter_at
        )

    def routes(self) -> list[Route]:
        """Each path and its handlers (streams.ops.console.pages), bound to this console."""

        def bound(handler: Callable[..., Awaitable[web.StreamResponse]]) -> Handler:
            return functools.partial(handler, self)

        return [
            Route("/console", "console_home", get=bound(search.home)),
            Route("/console/login", "console_login", get=bound(login.login_form), post=bound(login.login), public=True),
            Route("/console/logout", "console_logout", post=bound(login.logout)),
            Route("/console/search", "console_search", get=bound(search.search)),
            Route("/console/users/{key}", "console_user", get=bound(user.user)),
            Route("/console/groups/{group_id}", "console_group", get=bound(group.group)),
            Route("/console/destinations", "console_destinations", get=bound(destinations.destinations)),
            Route("/console/dead-letters", "console_dead_letters", get=bound(deadletters.dead_letters)),
            Route("/console/dead-letters/confirm", "console_confirm", post=bound(replay.confirm)),
            Route("/console/dead-letters/replay", "console_replay", post=bound(replay.replay)),
            Route("/console/try", "console_try", get=bound(trymessage.form), post=bound(trymessage.preview)),
            Route("/console/static/{name}", "console_static", get=self.static, public=True),
        ]

    async def handle(self, route: Route, handler: Handler, request: web.Request, **match: str) -> web.StreamResponse:
        """Every console request: off without a token, the session checked (and the
        CSRF token for a POST), errors as a page without details."""
        if not self.sessions.enabled:
            return text("the console is off: set CS_RELAY_ADMIN_TOKEN to use it\n", 404)
        session = None
        if not route.public:
            session = self.sessions.read(request.cookies.get(COOKIE))
            if session is None and request.method == "GET" and request.headers.get(ROUTED_HEADER):
                # a page another worker forwards here (this worker owns the user)
                headers = request.headers
                session = self.sessions.forwarded(headers.get("Authorization"), headers.get(SESSION_HEADER))
            if session is None:
                if request.method == "GET":
                    return page(login_page("Log in to see this page."), 401)
                return text("log in first\n", 401)
            if request.method == "POST":
                try:
                    form = await request.post()
                except web.HTTPRequestEntityTooLarge:  # over the web server's client_max_size
                    return text("the form is too large\n", 413)
                if not self.sessions.csrf_ok(session, str(form.get("csrf") or "")):
                    return text("missing or wrong CSRF token: reload the page\n", 403)
        try:
            return await handler(request, session, **match)
        except Exception as exc:  # a bug shows a page, not a stack trace
            log.exception("console %s %s failed", request.method, request.path)
            return page(
                message_page("Error", f"{type(exc).__name__}: see the worker log.", csrf=self.csrf(session)), 500
            )

    def csrf(self, session: Session | None) -> str:
        """The session's CSRF token ("" without a session: no forms to protect)."""
        return self.sessions.csrf(session) if session else ""

    async def static(self, request: web.Request, session: None, name: str) -> web.StreamResponse:
        if name not in self.static_files:
            return text("not found\n", 404)
        return web.Response(
            body=self.static_files[name],
            content_type=STATIC_TYPES[name],
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"},
        )


# ------------------------------------------------------------------ the worker


def install(app: Any, admin: Any, journal: Journal, run: Callable[[Sequence[bytes]], list[dict[str, Any]]]) -> Console:
    """Register the console on the worker's Faust app (`streams.runtime.app`, after
    `admin.install`): its pages, and the timer that samples the counters for the chart.
    A replay is sent as the CLI sends it, with its own producer, to `settings.input_topic`;
    `run` previews messages of a user this worker owns (`streams.runtime.previewing`)."""
    from streams.ops.observe import status_document
    from streams.ops.ownership import owner_url, same_worker
    from streams.partitioner import owner_partition

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
        preview=trymessage.by_owner(locate, run, lambda: app.http_client, settings.admin_token.reveal()),
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


__all__ = ["Console", "Sources", "Located", "install", "ROUTED_HEADER", "SESSION_HEADER"]
