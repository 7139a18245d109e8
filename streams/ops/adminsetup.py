"""Wiring the worker's HTTP endpoints into the Faust app (`install`, called once by
`streams.runtime.app`): Faust's own table pages off, the Host allow-list, the log
format and its quieting of start-up noise, the metrics hooks, and the `Admin` pages
(`streams.ops.admin`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, cast

import faust

from streams.ops.admin import FAUST_PAGES_OFF, Admin
from streams.ops.hostcheck import allowed_hosts, host_guard
from streams.ops.logs import logging_config, quiet_startup_noise
from streams.ops.observe import Stats
from streams.settings import Settings
from streams.settingsview import document as settings_document


def switch_off_faust_pages(app: faust.App) -> None:
    """Faust's `/table` pages serve any key of any table and `/router` the cluster's
    layout: neither belongs on a worker holding user data. Must run before the first
    `app.page` (which builds the web server with the settings as they are then)."""
    for setting in FAUST_PAGES_OFF:
        setattr(app.conf, setting, False)
    served = {prefix for prefix, _ in getattr(app.web.blueprints, "_enabled", ())}
    if served & {"/table", "/router"}:  # pragma: no cover - the web server was built before
        raise RuntimeError(f"Faust pages {sorted(served)} are served; install the admin endpoints earlier")


def install(
    app: faust.App,
    *,
    settings: Settings,
    users: Any,
    pending: Any,
    groups: Any,
    source_topics: Collection[str],
    partitions: int,
    counters: Mapping[str, int],
    unacknowledged: Callable[[], int],
    clients: Mapping[str, Any],
    stats: Stats,
    parked_oldest_age: Callable[[], Mapping[str, float]] = dict,
    circuits: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
    pending_counts: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
    failure: Callable[[], str | None] = lambda: None,
) -> Admin:
    """Wire the endpoints, metrics hooks and log format into the app (called once, at
    the end of `streams.runtime.app`)."""
    switch_off_faust_pages(app)
    allowed = allowed_hosts(settings)
    if allowed is not None:  # before the server starts: aiohttp freezes its middlewares then
        cast(Any, app.web).web_app.middlewares.append(host_guard(allowed))
    app.conf.logging_config = logging_config(
        level=settings.log_level, log_format=settings.log_format, secrets=settings.secrets()
    )
    quiet_startup_noise()  # a new group's coordinator not elected yet: INFO, not ERROR
    if settings.log_format == "json":
        logging.captureWarnings(True)  # Python's warnings as log lines too, not bare stderr text
    for key, client in clients.items():
        client.on_attempt = stats.observer(key)
    admin = Admin(
        app=app,
        settings=settings,
        users=users,
        pending=pending,
        groups=groups,
        source_topics=tuple(source_topics),
        partitions=partitions,
        counters=counters,
        unacknowledged=unacknowledged,
        destinations={key: client.name for key, client in clients.items()},
        stats=stats,
        parked_oldest_age=parked_oldest_age,
        circuits=circuits,
        pending_counts=pending_counts,
        failure=failure,
        config=settings_document()[0],  # this process's environment, read as `settings` was
    )
    admin.register()
    return admin
