"""The worker's own HTTP endpoints, on Faust's web server (CS_RELAY_WEB_HOST:CS_RELAY_WEB_PORT).

    GET /health             200 while the process runs                       open
    GET /ready              200 once partitions are assigned and tables       open
                            recovered, else 503; JSON details either way
    GET /version            {"version", "python", "faust"}                    open
    GET /users/{userId}     a user's state (a userId, or an anonymousId)      token
    GET /groups/{groupId}   a group's state                                   token
    GET /pending/{userId}   a user's waiting events per destination           token
    GET /status             per destination: delivered, retrying, pending,    token
                            dead-lettered; consumer lag (streams.ops.observe)
    GET /metrics            the same and more, in Prometheus text format      token
    GET /config             its settings by variable (streams.settingsview)   token

"token": when CS_RELAY_ADMIN_TOKEN is set these need `Authorization: Bearer <token>`
(compared in constant time), else they answer 401. Errors are JSON
`{"error": code, "detail": sentence}`, masked of secrets.

Routing: a user's state lives in the worker that owns the user's by-user partition.
A request reaching another worker is forwarded to the owner (one hop, marked with
`X-CS-Relay-Routed`); answers say who served them (`X-CS-Relay-Served-By`, the owner's
canonical URL) and the partition (`X-CS-Relay-Partition`). Faust's own
`@app.table_route` cannot be used as it is: it hashes the key serialized with the
table's key serializer (JSON, `"u1"` with the quotes), while the by-user topic, whose
partitions the tables follow, is keyed by the raw UTF-8 bytes (`u1`): for many keys
the two land in different partitions. `owner_partition` (streams.partitioner) hashes the raw bytes with
Kafka's default partitioner, as the producer of the by-user topic does, and the owner
comes from Faust's own assignment metadata (`app.router.table_metadata`).
Groups are a GlobalTable, in every worker: served locally.

Every page, open ones included, answers only to the worker's own names in `Host`
(streams.ops.hostcheck, CS_RELAY_WEB_ALLOWED_HOSTS: against DNS rebinding). A request
forwarded to a peer carries this worker's admin token, never the caller's headers.

Faust's built-in pages that expose data or topology (`/table`, `/router`, statistics,
`/graph`, `/performance`) are switched off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import faust
from faust import web
from faust.tables.manager import TableManager
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from streams.core.pendingcounts import pending_counts
from streams.core.redact import redact
from streams.ops.observe import (
    Snapshot,
    Stats,
    consumer_lag,
    status_document,
    versions,
    worker_registry,
)
from streams.ops.ownership import changelog_remaining, owner_url, same_worker
from streams.ops.webserve import authorized  # shared with `cs-relay ingest`'s /metrics
from streams.partitioner import owner_partition
from streams.settings import Settings

log = logging.getLogger(__name__)

ROUTED_HEADER = "X-CS-Relay-Routed"
SERVED_BY_HEADER = "X-CS-Relay-Served-By"
PARTITION_HEADER = "X-CS-Relay-Partition"
FORWARD_TIMEOUT = 10.0
# Faust's built-in pages, all off: /table serves table data, the others topology and internals.
FAUST_PAGES_OFF = (
    "web_tables_enabled",
    "web_router_enabled",
    "web_stats_enabled",
    "web_graph_enabled",
    "web_metrics_enabled",
)

Reply = tuple[int, Any]  # HTTP status and JSON body
NOT_READY = {"error": "not_ready", "detail": "this worker is starting or rebalancing; try again"}


def error(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


@dataclass
class Admin:
    """The endpoints' view of a running worker. Built by `install()`."""

    app: faust.App
    settings: Settings
    users: Any
    pending: Any
    groups: Any
    source_topics: Collection[str]
    partitions: int
    counters: Mapping[str, int]
    unacknowledged: Callable[[], int]
    destinations: Mapping[str, str]
    stats: Stats
    # destination -> age in seconds of its oldest parked delivery (the runtime keeps it)
    parked_oldest_age: Callable[[], Mapping[str, float]] = dict
    # destination -> its circuit breaker's status (streams.core.breaker, the runtime keeps them)
    circuits: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
    # destination -> state -> events waiting, kept by the runtime as it writes pending
    # records (streams.core.pendingcounts.PendingCounts); None: counted from the table (tests)
    pending_counts: Callable[[], Mapping[str, Mapping[str, int]]] | None = None
    # why the worker is stopping after work failed for good (Runtime.failure), or None
    failure: Callable[[], str | None] = lambda: None
    # its settings by variable, secrets masked (streams.settingsview.document at start-up)
    config: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.registry = worker_registry(self.snapshot)  # this worker's own, with process metrics

    # ------------------------------------------------------------------ readiness

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        app = self.app
        started = getattr(app, "_consumer", None) is not None
        # the app's TableManager (its declared TableManagerT has no recovery)
        recovery = cast(TableManager, app.tables).recovery
        recovered = recovery.completed.is_set()
        rebalancing = bool(app.rebalancing)
        assigned: dict[str, list[int]] = {topic: [] for topic in self.source_topics}
        if started:
            for tp in app.assignor.assigned_actives():
                if tp.topic in assigned:
                    assigned[tp.topic].append(tp.partition)
        failure = self.failure()
        ready = started and recovered and not rebalancing and not recovery.in_recovery and failure is None
        return ready, {
            "ready": ready,
            **({"failed": failure} if failure is not None else {}),
            "worker": str(app.conf.canonical_url),
            "consumer_started": started,
            "rebalancing": rebalancing,
            "recovering": bool(recovery.in_recovery),
            "recovery_completed": recovered,
            # Progress: what this worker still has to read from the changelogs before
            # it serves its active partitions, and to bring its standby copies up to date.
            "recovery_remaining": {
                "active": changelog_remaining(recovery.active_highwaters, recovery.active_offsets),
                "standby": changelog_remaining(recovery.standby_highwaters, recovery.standby_offsets),
            },
            "partitions": {topic: sorted(parts) for topic, parts in assigned.items()},
        }

    # ------------------------------------------------------------------ state

    def read_user(self, key: str) -> Reply:
        data = self.users.get(key)
        return (200, data) if data is not None else (404, error("not_found", f"no user {key!r}"))

    def read_pending(self, key: str) -> Reply:
        data = self.pending.get(key)
        if data is None and self.users.get(key) is None:
            return 404, error("not_found", f"no user {key!r}")
        return 200, data if data is not None else {"queues": {}}

    def read_group(self, key: str) -> Reply:
        data = self.groups.get(key)
        return (200, data) if data is not None else (404, error("not_found", f"no group {key!r}"))

    # ------------------------------------------------------------------ numbers

    def lag(self) -> dict[tuple[str, int], int]:
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return {}
        committed = getattr(consumer, "_committed_offset", {})
        read = getattr(consumer, "_read_offset", {})
        ends: dict[tuple[str, int], int | None] = {}
        positions: dict[tuple[str, int], int | None] = {}
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in self.source_topics:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:  # not fetched yet, or being revoked
                end = self.app.monitor.tp_end_offsets.get(tp)
            position = committed.get(tp)
            ends[(tp.topic, tp.partition)] = end
            positions[(tp.topic, tp.partition)] = position if position is not None else read.get(tp)
        return consumer_lag(ends, positions)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            destinations=self.destinations,
            counters=dict(self.counters),
            stats=self.stats,
            pending=self.pending_counts() if self.pending_counts is not None else pending_counts(self.pending.values()),
            lag=self.lag(),
            unacknowledged=self.unacknowledged(),
            ready=self.readiness()[0],
            parked_oldest_age=dict(self.parked_oldest_age()),
            circuits=dict(self.circuits()),
        )

    # ------------------------------------------------------------------ HTTP

    def respond(self, view: web.View, status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
        if status >= 400 and isinstance(body, dict) and "detail" in body:
            body = {**body, "detail": redact(str(body["detail"]), self.settings.secrets())}
        return view.json(body, status=status, headers=dict(headers or {}))

    async def serve(
        self,
        view: web.View,
        request: web.Request,
        handler: Callable[..., Awaitable[web.Response]],
        match: Mapping[str, str],
        *,
        open_: bool,
    ) -> web.Response:
        if not open_ and not authorized(request.headers.get("Authorization"), self.settings.admin_token.reveal()):
            return self.respond(
                view,
                401,
                error("unauthorized", "send 'Authorization: Bearer <CS_RELAY_ADMIN_TOKEN>'"),
                {"WWW-Authenticate": 'Bearer realm="cs-relay"'},
            )
        try:
            return await handler(view, request, **match)
        except Exception as exc:  # a bug must answer JSON, not a stack trace
            log.exception("%s %s failed", request.method, request.rel_url.path)
            return self.respond(view, 500, error("internal", f"{type(exc).__name__} (see the worker log)"))

    async def owned(
        self,
        view: web.View,
        request: web.Request,
        table: Any,
        key: str,
        read: Callable[[str], Reply],
        *,
        body: bytes | None = None,
    ) -> web.Response:
        """Answer for a user key here if this worker owns its partition, else forward
        (a POST with its `body`, read already)."""
        if not self.readiness()[0]:
            return self.respond(view, 503, NOT_READY)
        partition = owner_partition(key, self.partitions)
        owner = owner_url(self.app.router.table_metadata(table.name), partition)
        if owner is None:
            return self.respond(view, 503, error("unavailable", f"no worker owns partition {partition} yet; try again"))
        if not same_worker(owner, self.app.conf.canonical_url):
            if request.headers.get(ROUTED_HEADER):
                return self.respond(view, 503, error("unavailable", "partition ownership is moving; try again"))
            return await self.forward(view, request, owner, body=body)
        status, answer = read(key)
        return self.respond(
            view, status, answer, {SERVED_BY_HEADER: str(self.app.conf.canonical_url), PARTITION_HEADER: str(partition)}
        )

    async def forward(
        self,
        view: web.View,
        request: web.Request,
        owner: str,
        extra: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> web.Response:
        """The same request (a GET, or a POST with its `body`) to the owner. The peer is
        reached with this worker's own admin token and `extra` (the console adds its
        session id), never with the caller's headers: a browser's cookie does not travel
        between workers."""
        target = URL(owner).with_path(request.rel_url.raw_path, encoded=True).with_query(request.rel_url.query)
        headers = {**(extra or {}), ROUTED_HEADER: "1"}
        token = self.settings.admin_token.reveal()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            if body is not None:
                headers["Content-Type"] = "application/json"
            async with self.app.http_client.request(
                request.method,
                target,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            ) as response:
                answer = await response.read()
                keep = {k: v for k, v in response.headers.items() if k.lower().startswith("x-cs-relay-")}
                return view.bytes(answer, content_type=response.content_type, status=response.status, headers=keep)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("forwarding %s to %s failed: %s", request.rel_url.path, owner, type(exc).__name__)
            return self.respond(
                view, 502, error("owner_unreachable", f"the worker that owns this key ({owner}) did not answer")
            )

    # ------------------------------------------------------------------ pages

    def register(self) -> None:
        app = self.app

        async def health(view: web.View, request: web.Request) -> web.Response:
            return view.json({"status": "alive"})

        async def ready(view: web.View, request: web.Request) -> web.Response:
            ok, details = self.readiness()
            return view.json(details, status=200 if ok else 503)

        async def user(view: web.View, request: web.Request, userId: str) -> web.Response:
            return await self.owned(view, request, self.users, userId, self.read_user)

        async def pending(view: web.View, request: web.Request, userId: str) -> web.Response:
            return await self.owned(view, request, self.pending, userId, self.read_pending)

        async def group(view: web.View, request: web.Request, groupId: str) -> web.Response:
            if not self.readiness()[0]:
                return self.respond(view, 503, NOT_READY)
            status, body = self.read_group(groupId)
            return self.respond(view, status, body, {SERVED_BY_HEADER: str(app.conf.canonical_url)})

        async def status(view: web.View, request: web.Request) -> web.Response:
            return view.json({"worker": str(app.conf.canonical_url), **status_document(self.snapshot())})

        async def metrics(view: web.View, request: web.Request) -> web.Response:
            return view.bytes(generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def version(view: web.View, request: web.Request) -> web.Response:
            return view.json(versions())

        async def config(view: web.View, request: web.Request) -> web.Response:
            return view.json(self.config or {})

        pages: list[tuple[str, Callable[..., Awaitable[web.Response]], bool]] = [
            ("/health", health, True),
            ("/ready", ready, True),
            ("/version", version, True),
            ("/users/{userId}", user, False),
            ("/groups/{groupId}", group, False),
            ("/pending/{userId}", pending, False),
            ("/status", status, False),
            ("/metrics", metrics, False),
            ("/config", config, False),
        ]
        for path, handler, open_ in pages:
            app.page(path, name=f"cs_relay_{handler.__name__}")(self._view(handler, open_))

    def _view(self, handler: Callable[..., Awaitable[web.Response]], open_: bool) -> type[web.View]:
        admin = self

        class AdminView(web.View):
            async def get(self, request: web.Request, **match: str) -> web.Response:
                return await admin.serve(self, request, handler, match, open_=open_)

        AdminView.__name__ = AdminView.__qualname__ = f"{handler.__name__.title()}View"
        return AdminView
