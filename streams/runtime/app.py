"""The Faust application: topics, tables and the two agents that carry the business rule.

    segment-events ──intake──▶ cs-relay-by-user ──route──▶ ClientSuccess, CustomerSuccessBox
          │ (raw bytes)   (keyed by userId/anonymousId)  │
          └─ bad input ──▶ segment-events-dlq ◀─────────┘ refused or undeliverable

* `intake` parses and validates each raw record (`streams.core.segment`), sends what cannot be
  processed to the dead-letter topic with its original bytes, and re-keys the rest by
  user so that one worker sees all of a user's messages, in order.
* `route` runs the pure `streams.core.step.step` against the user's state in the `users`,
  `groups` and `pending` tables, writes the new state back (assigned, so the changelog
  has it) and hands the requests to the partner clients. Deliveries run concurrently;
  each event is acknowledged, in offset order, only when its deliveries are finished
  (`streams.runtime.inflight`).

The app is configured from `streams.settings.Settings.from_env()` when this module is
imported. Start it with `cs-relay worker`, which first creates the topics and checks
their partition counts (`streams.runtime.topics`); `faust -A streams.runtime.app worker` skips those
checks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Awaitable, Mapping

import faust
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from streams.core.deadletter import dead_letter_headers
from streams.ops.dlq import REPLAY_DESTINATION_HEADER, REPLAY_HEADER
from streams.core.decision import PartnerRequest
from streams.core.retry import Outcome, backoff, classify
from streams.runtime.delivery import PartnerClient, Result
from streams.core import dedupe
from streams.runtime import faust_fixes, wiring
from streams.ops import admin, observe  # HTTP endpoints, metrics and event ids in logs (issue 6)
from streams.ops.admin import owner_partition
from streams.runtime.inflight import AckTracker, Chains, ParkingMarks, Redeliveries
from streams.core import pending as pending_mod
from streams.core.pending import Parked, Pending, confirm
from streams.core.reasons import Reason
from streams.core.redact import RedactingFilter
from streams.core.step import (
    DeadLetter,
    Dispatch,
    Step,
    expire_held,
    merge_step,
    release_ready,
    resend_releasing,
    step,
)
from streams.core.segment import InvalidMessage, parse
from streams.settings import Settings
from streams.core.state import GroupState, Readable, UserState
from streams.runtime.tablescan import items_of_partition
from streams.runtime.topics import by_user_topic_name

log = logging.getLogger("cs_relay")

settings = Settings.from_env()
faust_fixes.install()

KIND_HEADER = "cs-relay-kind"
KIND_PENDING_DONE = b"pending-done"  # released events delivered: forget them
KIND_MERGE_REQUEST = b"merge-request"  # to an anonymous profile: hand yourself to a user
KIND_MERGE_PROFILE = b"merge-profile"  # to a user: an anonymous profile to fold in
KIND_SWEEP = b"sweep"  # to one partition: prune expired dedupe records
KIND_PARK = b"park"  # a delivery failed in a retryable way: keep it in the user's pending
KIND_RETRY_DUE = b"retry-due"  # to one partition: these users have parked deliveries due
KIND_RETRIED = b"retried"  # the outcome of retrying a parked delivery
RETRY_TICK = 1.0  # seconds between looks for parked deliveries that are due
REPLAY_HEADERS = (REPLAY_HEADER, REPLAY_DESTINATION_HEADER)
# A dead letter keeps the original bytes, and an input record may be as large as the
# broker allows (1 MB by default): the producer and the dead-letter topic take more.
MAX_RECORD_BYTES = 4 * 1024 * 1024
DLQ_TRUNCATED_BYTES = 64 * 1024
DLQ_SEND_ATTEMPTS = 8
MAX_UNACKED_EVENTS = 5000

class RelayApp(faust.App):
    """A Faust app that stops gracefully: on SIGTERM it stops fetching, lets in-flight
    deliveries finish (bounded by CS_RELAY_SHUTDOWN_TIMEOUT), commits what they
    acknowledged, and only then lets Faust stop the consumer. Faust's own stop commits
    first and would leave the last finished events to be processed again."""

    def _new_producer(self) -> Any:
        return faust_fixes.with_bounded_flush(super()._new_producer())

    async def on_stop(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.stop_flow()
            self.flow_control.suspend()
            self.flow_control.clear()
            finished = await acks.drain(timeout=settings.shutdown_timeout)
            if not finished:
                log.warning(
                    "stopping with %d events unacknowledged after %.0f s; they will be processed again",
                    acks.in_flight,
                    settings.shutdown_timeout,
                )
            try:
                await consumer.commit()
            except Exception:  # the broker may be gone; uncommitted events are redone
                log.exception("final commit failed")
        for client in CLIENTS.values():
            await client.close()
        await super().on_stop()


app = RelayApp(
    settings.app_id,
    broker=[f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")],
    store="rocksdb://",
    datadir=str(settings.data_dir),
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    producer_max_request_size=MAX_RECORD_BYTES,
    # A worker that dies is noticed after the session timeout; only then are its
    # partitions handed to the others (Faust's default is 60 s).
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
    # Committing often keeps the redo after a crash short (duplicates, not losses).
    broker_commit_interval=settings.commit_interval,
    # Standbys keep a copy of other workers' table partitions up to date, so a worker
    # that takes over after a loss resumes without replaying the whole changelog.
    table_standby_replicas=settings.standby_replicas,
    # A topic created while a worker joins is picked up at the next metadata refresh
    # (Faust's default is 5 minutes).
    consumer_metadata_max_age_ms=30_000,
    web_host=settings.advertised_web_host,  # the canonical URL other workers call
    web_port=settings.web_port,
    web_bind=settings.web_host,
    stream_wait_empty=False,
)

input_topic = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw")
by_user_topic = app.topic(
    by_user_topic_name(settings.app_id),
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,
)
dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")

# Users and their waiting events live in the partition of their user key: every read
# and write in `route` is local to the worker that owns the key.
users = app.Table("users", default=None)
pending_table = app.Table("pending", default=None)
# Groups are a GlobalTable: a group call arrives in the partition of the user who made
# it, but any user's event may name the group (`context.groupId`) or belong to it, so
# every worker needs every group. Groups are few and small next to users, so a full
# copy per worker is cheap, and it avoids a second re-keyed hop (and its ordering
# questions) between a group call and the events that depend on it.
groups_table = app.GlobalTable("groups", default=None)
# Recently routed messageIds per user (streams.core.dedupe), in the user's partition.
seen_table = app.Table("seen", default=None)


DESTINATIONS = wiring.destinations(settings)
CLIENTS = wiring.clients(settings)
MEMORIES = wiring.memories()  # what every registered destination remembers of users and groups
acks = AckTracker()
_rng = random.Random()
redeliveries = Redeliveries()
chains = Chains()
in_flight: set[tuple[str, str, int]] = set()  # (user key, destination, pending seq)
# Parking, in this process (streams.runtime.inflight.ParkingMarks): park records in transit,
# parked heads being retried, and when each user's next retry is due.
marks = ParkingMarks()
parking, retrying, retry_due_at = marks.parking, marks.retrying, marks.retry_due_at
retry_rescan = asyncio.Event()
counters: Counter[str] = Counter()


@app.on_partitions_revoked.connect
async def _on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
    redeliveries.forget((tp.topic, tp.partition) for tp in revoked)


@app.on_partitions_assigned.connect
async def _on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
    # The parked deliveries of users in partitions that went elsewhere, and their park
    # records in transit, are the next owner's now (it finds them in the table); ours
    # would be stale if the partitions returned. Those that stayed keep theirs.
    ours = {tp.partition for tp in assigned if tp.topic == by_user_topic.get_topic_name()}
    partitions = by_user_topic.partitions or settings.topic_partitions
    marks.reassigned(ours, lambda key: owner_partition(key, partitions))


@app.on_configured.connect
def _announce(app: faust.App, conf: Any, **kwargs: Any) -> None:  # pragma: no cover - start-up log
    logging.getLogger().addFilter(RedactingFilter(settings.secrets()))
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(settings.secrets()))


@app.task
async def _start_up() -> None:
    log.info("cs-relay settings: %s", json.dumps(settings.redacted()))
    wiring.announce(settings, log)
    for client in CLIENTS.values():
        await client.start()


@app.timer(interval=30.0)
async def _report() -> None:
    if counters:
        log.info("cs-relay counters: %s; unacknowledged events: %d", dict(sorted(counters.items())), acks.in_flight)


def _source(event: faust.EventT) -> dict[str, Any]:
    message = event.message
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def _headers(event: faust.EventT) -> dict[str, bytes]:
    headers = event.headers or {}
    if isinstance(headers, Mapping):
        return {k: v for k, v in headers.items()}
    return {k: v for k, v in headers}


def _source_from_headers(headers: Mapping[str, bytes], fallback: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(headers["cs-relay-source"])
    except (KeyError, ValueError):
        return fallback


async def send_dead_letter(dead: DeadLetter, key: bytes | None = None, *, status: int | None = None) -> None:
    counters[f"dead_lettered.{dead.stage}.{dead.reason}"] += 1
    observe.on_dead_letter(dead)
    log.warning(
        "dead letter (%s, %s%s): %s",
        dead.stage,
        dead.reason,
        f", {dead.destination}" if dead.destination else "",
        dead.detail,
    )
    headers = dead_letter_headers(
        reason=dead.reason,
        detail=dead.detail,
        stage=dead.stage,
        source=dead.source,
        destination=dead.destination,
        status=status,
        secrets=settings.secrets(),
    )
    value = dead.raw.encode("utf-8") if isinstance(dead.raw, str) else dead.raw
    for attempt in range(1, DLQ_SEND_ATTEMPTS + 1):
        try:
            await _produce(dlq_topic, key=key, value=value, headers=headers)
            return
        except Exception as exc:  # noqa: BLE001 - Faust wraps the aiokafka error
            if _too_large(exc) and len(value) > DLQ_TRUNCATED_BYTES:
                # Kafka refuses the original bytes on the dead-letter topic (its size
                # limit is lower than the input's): keep the head, say so, and log it.
                log.error("dead letter of %d bytes is too large for %s; keeping its first %d bytes",
                          len(value), settings.dlq_topic, DLQ_TRUNCATED_BYTES)
                headers = {**headers, "cs-relay-truncated-from": str(len(value)).encode()}
                value = value[:DLQ_TRUNCATED_BYTES]
                continue
            if attempt == DLQ_SEND_ATTEMPTS:
                raise  # the event stays unacknowledged: a restart processes it again
            log.warning("dead-letter topic refused a record (%r); retrying", exc)
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))


def _too_large(exc: BaseException | None) -> bool:
    """Whether Kafka refused a record for its size (Faust wraps aiokafka's error)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@app.agent(input_topic)
async def intake(stream: faust.StreamT) -> None:
    """Validate each raw record; re-key the good ones by user, dead-letter the rest.
    An input record is acknowledged once Kafka has taken what it became."""
    async for event in stream.noack().events():
        await acks.wait_below(MAX_UNACKED_EVENTS)
        if _fetched_before_a_rebalance(event):
            continue
        source = _source(event)
        tp = (source["topic"], source["partition"])
        if not redeliveries.first_time(tp, source["offset"]):
            continue  # taken already; the first copy's acknowledgement covers it
        raw: bytes = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
        try:
            msg = parse(raw)
        except InvalidMessage as exc:
            work = send_dead_letter(
                DeadLetter(exc.reason, exc.detail, raw, source, "intake"),
                key=event.key if isinstance(event.key, bytes) else None,
            )
        else:
            counters[f"in.{msg.type}"] += 1
            headers = {k: v for k, v in _headers(event).items() if k in REPLAY_HEADERS}
            headers["cs-relay-source"] = json.dumps(source).encode()
            # Hand the record to the producer here, in input order (a user's records
            # must reach the by-user topic in the order they came); only Kafka's
            # acknowledgement is awaited in the background.
            work = await by_user_topic.send(key=msg.key.encode("utf-8"), value=raw, headers=headers)
        acks.add(tp, event.ack, [work])


def _fetched_before_a_rebalance(event: faust.EventT) -> bool:
    """Whether a rebalance has begun since `event` was fetched; if so it is left alone
    (not handled, not acknowledged) and whoever owns its partition now reads it again
    from the committed offset.

    Faust checks this when a stream hands out an event, but the agents may then wait
    (back-pressure) before handling it, and `stream_wait_empty` is off so that a
    rebalance does not wait for partner deliveries. An event handled after its partition
    was revoked would write the user's state to the changelog after the new owner had
    restored it: a stale record that a later take-over restores (seen in
    tests/test_e2e_scale.py as users whose group move was missing from their state)."""
    if app.flow_control.is_active() and event.message.generation_id == app.consumer_generation_id:
        return False
    counters["left_after_rebalance"] += 1
    return True


async def _produce(topic: faust.TopicT, **kwargs: Any) -> None:
    fut = await topic.send(**kwargs)
    await fut


@app.agent(by_user_topic)
async def route(stream: faust.StreamT) -> None:
    """Apply each user's messages to their state, in order; deliver concurrently."""
    async for event in stream.noack().events():
        await acks.wait_below(MAX_UNACKED_EVENTS)
        if _fetched_before_a_rebalance(event):
            continue
        tp = (event.message.topic, event.message.partition)
        if not redeliveries.first_time(tp, event.message.offset):
            continue  # taken already in this assignment (see Redeliveries)
        try:
            work = handle(event)
        except Exception:  # a bug must not stop every other user's events
            log.exception("routing failed for an event at %s; it goes to the dead-letter topic", _source(event))
            work = [
                send_dead_letter(
                    DeadLetter(Reason.ROUTING_ERROR, "cs-relay could not route this event (see the worker log)",
                               bytes(event.value or b""), _source(event), "routing")
                )
            ]
        acks.add(tp, event.ack, work)


def handle(event: faust.EventT) -> list[Awaitable[Any]]:
    """The synchronous part of routing one event: state read, pure step, state written.
    Returns the deliveries, dead letters and records still to finish before the event
    is acknowledged."""
    key_bytes: bytes = event.key
    key = key_bytes.decode("utf-8")
    headers = _headers(event)
    kind = headers.get(KIND_HEADER)
    if kind == KIND_PENDING_DONE:
        done = json.loads(event.value)
        _store_pending(key, confirm(_pending(key), done["destination"], done["seq"]))
        # Only now is the event out of `releasing`; until this record is applied, a
        # later event of the user must not send it again.
        in_flight.discard((key, done["destination"], done["seq"]))
        return []
    if kind == KIND_MERGE_REQUEST:
        return _give_profile(key, json.loads(event.value)["into"])
    if kind == KIND_MERGE_PROFILE:
        return _take_profile(key, json.loads(event.value))
    if kind == KIND_SWEEP:
        return _sweep(event.message.partition)
    if kind == KIND_PARK:
        return _apply_park(key, json.loads(event.value))
    if kind == KIND_RETRY_DUE:
        return _start_retries(json.loads(event.value)["keys"])
    if kind == KIND_RETRIED:
        return _apply_retried(key, json.loads(event.value))

    raw_bytes: bytes = event.value
    msg = parse(raw_bytes)  # validated by intake already
    replay = REPLAY_HEADER in headers
    # Before any forwarding: a copy of an anonymous message that arrives after the
    # visitor logged in must meet the first copy's record, which is on this key.
    if not _first_routing(key, msg.message_id, event.message.offset, replay=replay):
        counters["duplicates"] += 1
        return []
    user = _user(key)
    if user is not None and user.merged_into:
        # An anonymous visitor who has logged in: their state lives with the user now.
        # One after another per user, so forwarded events keep their order.
        into = user.merged_into
        return [chains.submit((into, "forward"), lambda: _forward(into, raw_bytes, headers))]
    source = _source_from_headers(headers, _source(event))
    destinations = DESTINATIONS
    if replay and REPLAY_DESTINATION_HEADER in headers:
        only = headers[REPLAY_DESTINATION_HEADER].decode("utf-8", "replace")
        destinations = [d for d in DESTINATIONS if d.key == only]
    raw = raw_bytes.decode("utf-8")
    pending = _pending(key)
    now = time.time()
    result = step(
        key,
        msg,
        raw,
        source,
        user,
        pending,
        _group,
        destinations,
        now=now,
        now_iso=datetime.fromtimestamp(now, timezone.utc).isoformat(),
        max_pending=settings.pending_max_events,
        max_pending_age=settings.pending_max_age_seconds,
        blocked=frozenset(d.key for d in destinations if parking[(key, d.key)] > 0),
        memories=MEMORIES,
    )
    if result.group is not None:
        groups_table[result.group.group_id] = result.group.to_dict()
    for dest, _reason in result.skipped:
        counters[f"skipped.{dest}"] += 1
    for dest, _reason in result.held:
        counters[f"held.{dest}"] += 1
    work = _apply(key, pending, result)
    if result.merge_from is not None:
        work.append(_control(result.merge_from, KIND_MERGE_REQUEST, {"into": key}))
    return work


def _first_routing(key: str, message_id: str, offset: int, *, replay: bool = False) -> bool:
    """False for a duplicate messageId within the window (streams.core.dedupe); a replayed
    dead letter is routed again on purpose."""
    verdict, seen = dedupe.check(
        dedupe.Seen.from_dict(seen_table.get(key)),
        message_id,
        offset,
        time.time(),
        window=settings.dedupe_window_seconds,
        max_ids=settings.dedupe_max_ids_per_user,
        replay=replay,
    )
    if verdict is dedupe.Verdict.DUPLICATE:
        log.info("duplicate messageId %s for a user: dropped", message_id)
        return False
    seen_table[key] = seen.to_dict()
    return True


def _sweep(partition: int) -> list[Awaitable[Any]]:
    """Prune the dedupe records of this partition's users and dead-letter their held
    events past the age bound (users who went quiet too: their own next message would
    do it, but it may never come). Only keys of `partition` are touched: a table write
    goes to the changelog partition of the event being processed."""
    now = time.time()
    partitions = by_user_topic.partitions or settings.topic_partitions
    work: list[Awaitable[Any]] = []

    def owner(key: str) -> int:
        return owner_partition(key, partitions)

    pendings, seens = Readable(Pending.from_dict), Readable(dedupe.Seen.from_dict)
    for key, before in pendings.each(list(items_of_partition(pending_table, partition, owner))):
        after, dead = expire_held(before, now, settings.pending_max_age_seconds)
        if dead:
            _store_pending(key, after)
            work += [send_dead_letter(d, key.encode("utf-8")) for d in dead]
    for key, before in seens.each(list(items_of_partition(seen_table, partition, owner))):
        after = dedupe.prune(
            before, now, window=settings.dedupe_window_seconds, max_ids=settings.dedupe_max_ids_per_user
        )
        if not after.ids:
            del seen_table[key]
        elif after is not before:
            seen_table[key] = after.to_dict()
    if pendings.skipped or seens.skipped:
        log.warning("sweep of partition %d: %d records unreadable by this version were skipped", partition,
                    pendings.skipped + seens.skipped)
    return work


@app.timer(interval=settings.sweep_interval_seconds)
async def _request_sweeps() -> None:
    """Ask every by-user partition to prune its dedupe records: the pruning must run
    in the partition's own stream so its deletions reach the right changelog."""
    partitions = by_user_topic.partitions or settings.topic_partitions
    for partition in range(partitions):
        await _produce(by_user_topic, key=b"", value=b"{}", partition=partition, headers={KIND_HEADER: KIND_SWEEP})


def _apply(key: str, before: Pending, result: Step) -> list[Awaitable[Any]]:
    """Write a step's state (assigned back, so the changelog has it) and start its work."""
    users[key] = result.user.to_dict()
    if result.pending != before:
        _store_pending(key, result.pending)
    resend = resend_releasing(
        before, DESTINATIONS, result.user, _group, lambda dest, seq: (key, dest, seq) in in_flight
    )
    key_bytes = key.encode("utf-8")
    work: list[Awaitable[Any]] = [send_dead_letter(d, key_bytes) for d in result.dead_letters]
    work += [_dispatch(key, d) for d in (*resend, *result.dispatches)]
    return work


def _give_profile(anonymous_id: str, into: str) -> list[Awaitable[Any]]:
    """In the anonymous profile's partition: hand the profile and its waiting events to
    the user it logged in as, and forward this key's later events there."""
    anonymous = _user(anonymous_id)
    if anonymous is not None and anonymous.merged_into:
        return []  # merged already (a repeated request)
    profile = {
        "anonymous_id": anonymous_id,
        "user": anonymous.to_dict() if anonymous else None,
        "pending": _pending(anonymous_id).to_dict(),
    }
    users[anonymous_id] = UserState(key=anonymous_id, merged_into=into).to_dict()
    _store_pending(anonymous_id, Pending())
    counters["merged.anonymous"] += 1
    return [_control(into, KIND_MERGE_PROFILE, profile)]


def _take_profile(key: str, profile: Mapping[str, Any]) -> list[Awaitable[Any]]:
    """In the user's partition: fold the anonymous profile in and release what it allows."""
    user = _user(key) or UserState(key=key, user_id=key)
    anonymous = UserState.from_dict(profile["user"]) if profile.get("user") else None
    pending = _pending(key)
    result = merge_step(
        user, pending, anonymous, Pending.from_dict(profile.get("pending")), profile["anonymous_id"],
        _group, DESTINATIONS,
    )
    return _apply(key, pending, result)


def _user(key: str) -> UserState | None:
    data = users.get(key)
    return UserState.from_dict(data) if data else None


def _pending(key: str) -> Pending:
    return Pending.from_dict(pending_table.get(key))


def _group(group_id: str) -> GroupState | None:
    data = groups_table.get(group_id)
    return GroupState.from_dict(data) if data else None


async def _control(key: str, kind: bytes, body: Mapping[str, Any]) -> None:
    """A control record to the partition that owns `key` (its state can only be
    written there)."""
    await _produce(by_user_topic, key=key.encode("utf-8"), value=json.dumps(body).encode(), headers={KIND_HEADER: kind})


async def _forward(key: str, raw: bytes, headers: Mapping[str, bytes]) -> None:
    await _produce(by_user_topic, key=key.encode("utf-8"), value=raw, headers=dict(headers))


def _index_retry(key: str, pending: Pending) -> None:
    due_at = pending_mod.next_retry_at(pending)
    if due_at is None:
        retry_due_at.pop(key, None)
    else:
        retry_due_at[key] = due_at


def _store_pending(key: str, pending: Pending) -> None:
    _index_retry(key, pending)
    if pending.is_empty():
        if pending_table.get(key) is not None:
            del pending_table[key]
    else:
        pending_table[key] = pending.to_dict()


def _dispatch(key: str, dispatch: Dispatch) -> asyncio.Future:
    if dispatch.released_seq is not None:
        in_flight.add((key, dispatch.destination, dispatch.released_seq))
    return chains.submit((key, dispatch.destination), lambda: _deliver(key, dispatch))


async def _deliver(key: str, dispatch: Dispatch) -> Result | None:
    observe.on_delivery(dispatch)
    client = CLIENTS[dispatch.destination]
    if parking[(key, dispatch.destination)] > 0 or _pending(key).queue(dispatch.destination).parked:
        # An earlier delivery of this user to this partner is parked, or on its way to
        # be: park this one behind it rather than overtake it.
        await _park(key, dispatch, attempts=0, error="waiting behind a parked delivery", retry_after=None)
        return None
    result = await client.send(dispatch.request)
    counters[f"{result.outcome.value}.{dispatch.destination}"] += 1
    if result.outcome is Outcome.RETRY:
        await _park(key, dispatch, attempts=result.attempts, error=_error_text(client, result),
                    retry_after=result.retry_after)
        return result
    if result.outcome is Outcome.FAIL:
        await send_dead_letter(
            DeadLetter(
                Reason.PARTNER_REFUSED if classify(result.status) is Outcome.FAIL else Reason.RETRIES_EXHAUSTED,
                f"{client.name} answered {result.status}: {result.excerpt}"
                if result.status is not None
                else f"{client.name}: {result.excerpt}",
                dispatch.raw,
                dispatch.source,
                "delivery",
                dispatch.destination,
            ),
            key.encode("utf-8"),
            status=result.status,
        )
    if dispatch.released_seq is not None:
        # Confirm in the user's own partition, so the changelog write is local to the key.
        await _control(key, KIND_PENDING_DONE, {"destination": dispatch.destination, "seq": dispatch.released_seq})
    return result


# ---------------------------------------------------------------- issue 6: streams.ops.admin
ADMIN = admin.install(
    app,
    settings=settings,
    users=users,
    pending=pending_table,
    groups=groups_table,
    source_topics=(input_topic.get_topic_name(), by_user_topic.get_topic_name()),
    partitions=by_user_topic.partitions or settings.topic_partitions,
    counters=counters,
    unacknowledged=lambda: acks.in_flight,
    clients=CLIENTS,
)


# ------------------------------------------------------------- parked deliveries
#
# A delivery that still fails in a retryable way after the client's quick retries is
# parked: a `park` control record carries it to the user's partition, where it joins
# the user's pending record (durable, in the changelog) and the event is acknowledged.
# The user's later events for that partner wait behind it; everything else flows.
# Every RETRY_TICK a timer finds users whose parked head is due and sends a
# `retry-due` record to their partition; there the head is retried, and a `retried`
# record applies the outcome: done (the next one goes), retry later (backoff that
# honours Retry-After), or dead-lettered (a final refusal, or the window is over).


def _error_text(client: PartnerClient, result: Result) -> str:
    if result.status is not None:
        return f"{client.name} answered {result.status}: {result.excerpt}"
    return f"{client.name}: {result.excerpt}"


def _retry_delay(attempts: int, retry_after: float | None) -> float:
    return backoff(
        max(1, attempts), retry_after, base=settings.retry_base_delay, cap=settings.retry_max_delay, rng=_rng
    )


async def _park(key: str, dispatch: Dispatch, *, attempts: int, error: str, retry_after: float | None) -> None:
    parking[(key, dispatch.destination)] += 1  # before any await: the chain's next item sees it
    counters[f"parked.{dispatch.destination}"] += 1
    now = time.time()
    parked = Parked(
        0, dispatch.raw, dispatch.source, dispatch.request.to_dict(), dispatch.message_id,
        first_failed_at=now, attempts=attempts, next_at=now + _retry_delay(attempts, retry_after), last_error=error,
    )
    log.warning("parked a delivery to %s for retry (message %s): %s", dispatch.destination, dispatch.message_id, error)
    await _control(
        key, KIND_PARK,
        {"destination": dispatch.destination, "released_seq": dispatch.released_seq, "parked": parked.to_dict()},
    )


def _apply_park(key: str, body: Mapping[str, Any]) -> list[Awaitable[Any]]:
    dest = body["destination"]
    if parking[(key, dest)] > 0:
        parking[(key, dest)] -= 1
    if parking[(key, dest)] <= 0:
        del parking[(key, dest)]
    if body.get("released_seq") is not None:
        in_flight.discard((key, dest, body["released_seq"]))
    parked = Parked.from_dict(body["parked"])
    _store_pending(key, pending_mod.park(_pending(key), dest, parked, body.get("released_seq")))
    return []


@app.timer(interval=RETRY_TICK)
async def _retry_tick() -> None:
    """Send a `retry-due` record to each partition with users whose parked head is due."""
    if retry_rescan.is_set() and _recovered():
        retry_rescan.clear()
        # Any record it cannot read is its owner's to retry: an exception here would
        # stop the timer, and with it every retry of this worker.
        pendings = Readable(Pending.from_dict, errors=(ValueError, KeyError, TypeError))
        for key, pending in pendings.each(list(pending_table.items())):
            due_at = pending_mod.next_retry_at(pending)
            if due_at is not None:
                retry_due_at[key] = due_at
        if pendings.skipped:
            log.warning("retry rescan: %d pending records unreadable by this version were skipped", pendings.skipped)
    now = time.time()
    partitions = by_user_topic.partitions or settings.topic_partitions
    by_partition: dict[int, list[str]] = {}
    for key, due_at in list(retry_due_at.items()):
        if due_at <= now:
            by_partition.setdefault(owner_partition(key, partitions), []).append(key)
            retry_due_at[key] = now + 30.0  # until the partition answers (it resets this)
    for partition, keys in by_partition.items():
        await _produce(
            by_user_topic, key=b"", value=json.dumps({"keys": keys}).encode(), partition=partition,
            headers={KIND_HEADER: KIND_RETRY_DUE},
        )


def _recovered() -> bool:
    recovery = getattr(app.tables, "recovery", None)
    completed = getattr(recovery, "completed", None)
    return bool(completed is not None and completed.is_set() and not app.rebalancing)


def _start_retries(keys: list[str]) -> list[Awaitable[Any]]:
    """In the partition of `keys`: retry each due parked head once (not waited for by
    the acknowledgement: the parked record is durable whatever happens)."""
    now = time.time()
    for key in keys:
        pending = _pending(key)
        for dest, head in pending_mod.due(pending, now):
            if (key, dest, head.seq) in retrying or dest not in CLIENTS:
                continue
            retrying.add((key, dest, head.seq))
            chains.submit((key, dest), lambda k=key, d=dest, h=head: _retry(k, d, h))
        _index_retry(key, pending)
    return []


async def _retry(key: str, dest: str, head: Parked) -> None:
    client = CLIENTS[dest]
    try:
        result = await client.send(PartnerRequest.from_dict(head.request))
        counters[f"retried.{dest}"] += 1
        await _control(
            key, KIND_RETRIED,
            {"destination": dest, "seq": head.seq, "outcome": result.outcome.value, "attempts": result.attempts,
             "status": result.status, "error": _error_text(client, result), "retry_after": result.retry_after},
        )
    except BaseException:
        # No `retried` record will clear this retry's mark: let a later tick try again.
        retrying.discard((key, dest, head.seq))
        raise


def _apply_retried(key: str, body: Mapping[str, Any]) -> list[Awaitable[Any]]:
    dest, seq, outcome = body["destination"], body["seq"], body["outcome"]
    retrying.discard((key, dest, seq))
    before = _pending(key)
    head = next((p for p in before.queue(dest).parked if p.seq == seq), None)
    attempts = (head.attempts if head else 0) + body.get("attempts", 1)
    pending, given_up = pending_mod.retried(
        before, dest, seq, outcome=outcome, error=body.get("error", ""), now=time.time(),
        delay=_retry_delay(attempts, body.get("retry_after")), window=settings.retry_window_seconds,
        attempts=body.get("attempts", 1),
    )
    work: list[Awaitable[Any]] = []
    if outcome == Outcome.DONE.value:
        counters[f"done.{dest}"] += 1
    if given_up is not None:
        reason = Reason.RETRIES_EXHAUSTED if outcome == Outcome.RETRY.value else Reason.PARTNER_REFUSED
        detail = f"{given_up.last_error} (after {given_up.attempts} attempts)"
        dead = DeadLetter(reason, detail, given_up.raw, given_up.source, "delivery", dest)
        work.append(send_dead_letter(dead, key.encode("utf-8"), status=body.get("status")))
    user = _user(key)
    destination = next((d for d in DESTINATIONS if d.key == dest), None)
    if user is not None and destination is not None:
        pending, released = release_ready(pending, destination, user, _group)
        work += [_dispatch(key, d) for d in released]
    _store_pending(key, pending)
    if outcome == Outcome.DONE.value:
        _start_retries([key])  # the partner answers again: the next parked one goes now
    return work


@app.on_partitions_assigned.connect
async def _on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
    retry_rescan.set()  # newly owned users may have parked deliveries: find them

