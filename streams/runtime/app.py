"""The Faust application: topics, tables, the runtime, and what calls into it.

    segment-events ──intake──▶ cs-relay-by-user ──route──▶ the enabled destinations
          │ (raw bytes)   (keyed by userId/anonymousId)  │
          └─ bad input ──▶ segment-events-dlq ◀─────────┘ refused or undeliverable

* `intake` (`streams.runtime.intake`) parses and validates each raw record
  (`streams.core.segment`), sends what cannot be processed to the dead-letter topic with
  its original bytes, and re-keys the rest by user so that one worker sees all of a
  user's messages, in order. With CS_RELAY_INPUT_KEYED_BY_USER (an input topic keyed
  by user, with the by-user partition count) it routes each record found in its
  user's partition there, as `route` would, and re-keys only the others.
* `route` hands each by-user record to `streams.runtime.routing`: a control record to
  its handler (`streams.runtime.handlers`), a Segment call to the pure
  `streams.core.step.step` against the user's state in the `users`, `groups` and
  `pending` tables; the new state is written back (assigned, so the changelog has it)
  and the requests go to the partner clients (`streams.runtime.senders`). Deliveries
  run concurrently; each event is acknowledged, in offset order, only when its
  deliveries are finished (`streams.runtime.acks`).

This module only wires: everything that runs lives in the `Runtime` built here
(`streams.runtime.runtime`), and the functions of it. The app is configured from
`streams.settings.Settings.from_env()` when this module is imported. Start it with
`cs-relay worker`, which first creates the topics and checks their partition counts
(`streams.runtime.topics`); `faust -A streams.runtime.app worker` skips those checks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import faust

from streams import eventloop
from streams.core.redact import RedactingFilter
from streams.ops import (
    adminsetup,  # HTTP endpoints, metrics and event ids in logs (issue 6)
    preview_api,
)
from streams.ops.console import web as console
from streams.ops.observer import OpsObserver
from streams.runtime import (
    aggregation,
    faust_fixes,
    grouptable,
    previewing,
    readahead,
    retries,
    seentable,
    spilling,
    sweep,
    timers,
)
from streams.runtime.intake import intake_agent, route_agent
from streams.runtime.outbox import FaustOutbox
from streams.runtime.relayapp import TABLE_OPTIONS, create_app
from streams.runtime.rowcache import CachedRows
from streams.runtime.runtime import Runtime, Tables
from streams.runtime.topiclist import (
    GROUPS,
    PAYLOADS,
    PENDING,
    SEEN,
    SPILL,
    SPILLROWS,
    USERS,
    WAITERS,
    WINDOWS,
    by_user_topic_name,
)
from streams.settings import Settings

settings = Settings.from_env()
faust_fixes.install()
app = create_app(settings)

input_topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
by_user_topic = app.topic(
    by_user_topic_name(settings.app_id),
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,
)
dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")

# The tables, named as streams.runtime.topiclist lists them (their changelogs are
# created by `cs-relay worker` and listed by `cs-relay topics`). Users and their waiting
# events live in the partition of their user key: every read and write in `route` is
# local to the worker that owns the key.
users = app.Table(USERS, default=None, options=dict(TABLE_OPTIONS))
pending_table = app.Table(PENDING, default=None, options=dict(TABLE_OPTIONS))
# Groups are a GlobalTable: a group call arrives in the partition of the user who made
# it, but any user's event may name the group (`context.groupId`) or belong to it, so
# every worker needs every group. Groups are few and small next to users, so a full
# copy per worker is cheap, and it avoids a second re-keyed hop (and its ordering
# questions) between a group call and the events that depend on it.
# Every call reads its user's group: the rows read are kept until the table says they
# changed (streams.runtime.grouptable).
groups_table = grouptable.groups_table(app, GROUPS, dict(TABLE_OPTIONS))
# Recently routed messageIds per user (streams.core.dedupe), in the user's partition;
# new ones reach the changelog packed, many to a record (streams.runtime.seentable).
seen_table = seentable.seen_table(app, SEEN, dict(TABLE_OPTIONS))
# Each user's open aggregation windows (streams.core.aggregate.Windows), in the user's
# partition: a plain table, closed by window-close records rather than by Faust's
# windowed-table expiry (docs/architecture.md, Tables).
windows_table = app.Table(WINDOWS, default=None, options=dict(TABLE_OPTIONS))
# Users waiting for a group to become known, by groupId, in the group's partition
# (streams.runtime.groups, streams.core.waiters).
waiters_table = app.Table(WAITERS, default=None, options=dict(TABLE_OPTIONS))
# A row per waiting event of a user's `pending` record (streams.core.pendingrows).
payloads_table = app.Table(PAYLOADS, default=None, options=dict(TABLE_OPTIONS))
# A user's deliveries spilled past its share, in the user's partition (streams.core.spill).
spill_table = app.Table(SPILL, default=None, options=dict(TABLE_OPTIONS))
spillrows_table = app.Table(SPILLROWS, default=None, options=dict(TABLE_OPTIONS))


def _partitions() -> int:
    return by_user_topic.partitions or settings.topic_partitions


def _recovered() -> bool:
    recovery = getattr(app.tables, "recovery", None)
    completed = getattr(recovery, "completed", None)
    return bool(completed is not None and completed.is_set() and not app.rebalancing)


# The app, its topics and tables, and the runtime are module-level because Faust
# declares agents, tables and timers with decorators on the app that
# `faust -A streams.runtime.app` imports; the runtime is the one mutable object among
# them, and the decorated functions below only call into it.
runtime = Runtime.from_settings(
    settings,
    tables=Tables(
        # The rows every event reads, decoded once (streams.runtime.rowcache).
        users=CachedRows(users),
        pending=CachedRows(pending_table),
        groups=grouptable.cached(groups_table),
        seen=CachedRows(seen_table),
        windows=windows_table,
        waiters=waiters_table,
        payloads=payloads_table,
        spill=spill_table,
        spillrows=spillrows_table,
    ),
    outbox=FaustOutbox(by_user_topic, dlq_topic),
    partitions=_partitions,
    recovered=_recovered,
    observer=(observer := OpsObserver()),  # what /metrics, /status and the console show of its work
)
app.runtime = runtime
# After an assignment, a reader of its own looks ahead in the by-user partitions for an
# earlier owner's park records (streams.runtime.catchup).
runtime.parking.catchup.reader = readahead.reader(settings, app.conf.id, by_user_topic.get_topic_name())
if settings.input_keyed_by_user:  # calls are read again from the input topic (streams.runtime.inputcatchup)
    runtime.parking.catchup.input.bounds = readahead.bounds(settings, app.conf.id, settings.input_topic)
_TABLES = (users, pending_table, groups_table, seen_table, windows_table, waiters_table, payloads_table)
for _table in (*_TABLES, spill_table, spillrows_table):
    runtime.changelog.watch(_table)
# Work that failed for good stops the worker (exit status 1) rather than wedging it.
runtime.stop = lambda exc: asyncio.ensure_future(app.crash(exc))


# The two agents: functions of streams.runtime.intake, which Faust runs (and resumes)
# there, with the runtime and the app they read for; named as when they were defined here.
intake = app.agent(input_topic, name=f"{__name__}.intake")(intake_agent(runtime, app))
route = app.agent(by_user_topic, name=f"{__name__}.route")(route_agent(runtime, app))


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args); Faust sends one positional: the TPs
async def _on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
    await runtime.revoked((tp.topic, tp.partition) for tp in revoked)


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args); Faust sends one positional: the TPs
async def _on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
    runtime.assigned({tp.partition for tp in assigned if tp.topic == by_user_topic.get_topic_name()})


@app.on_configured.connect  # type: ignore[arg-type]  # mode types receivers as (sender, *args); Faust sends one positional: the conf
def _redact_logs(app: faust.App, conf: Any, **kwargs: Any) -> None:  # pragma: no cover - start-up
    logging.getLogger().addFilter(RedactingFilter(settings.secrets()))
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(settings.secrets()))


@app.task
async def _start_up() -> None:
    logging.getLogger("cs_relay").info("event loop: %s", eventloop.running())  # CS_RELAY_EVENT_LOOP
    await runtime.start()


@app.timer(interval=30.0)
async def _report() -> None:
    runtime.report()


@app.timer(interval=retries.RETRY_TICK)
async def _retry_tick() -> None:
    # A round that fails is logged and the next one (a second later) tries again.
    await timers.guarded(runtime, "retry tick", lambda: retries.tick(runtime))


@app.timer(interval=spilling.SPILL_TICK)
async def _spill_tick() -> None:
    await timers.guarded(runtime, "spill tick", lambda: spilling.tick(runtime))


@app.timer(interval=aggregation.WINDOW_TICK)
async def _window_tick() -> None:
    await timers.guarded(runtime, "window tick", lambda: aggregation.tick(runtime))


@app.timer(interval=settings.sweep_interval_seconds)
async def _request_sweeps() -> None:
    # Hourly: a failed round is tried again after 1, 2, 4 and 8 s before the next hour.
    await timers.guarded(runtime, "sweep", lambda: sweep.request_sweeps(runtime), attempts=5)


ADMIN = adminsetup.install(
    app,
    settings=settings,
    users=users,
    pending=runtime.rows.pendings,
    groups=groups_table,
    source_topics=(input_topic.get_topic_name(), by_user_topic.get_topic_name()),
    partitions=_partitions(),
    counters=runtime.counters,
    unacknowledged=lambda: runtime.acks.in_flight,
    clients=runtime.clients,
    stats=observer.stats,
    parked_oldest_age=lambda: runtime.parking.marks.parked_since.ages(runtime.clock()),
    circuits=lambda: {dest: b.status(runtime.clock()) for dest, b in runtime.sending.breakers.items()},
    pending_counts=runtime.rows.pending_counts.counts,
    failure=lambda: runtime.failure,
)
# The operator console at /console (issue 17; off without CS_RELAY_ADMIN_TOKEN).
# Previews (issue 24): `POST /preview/{userId}` and the console's "Try a message" page.
PREVIEW = functools.partial(previewing.run, runtime)
CONSOLE = console.install(app, ADMIN, observer.journal, PREVIEW)
preview_api.install(app, ADMIN, PREVIEW)
