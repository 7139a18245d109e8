"""What `route` does with one record of the by-user topic, in the partition that owns
its key: a control record goes to its handler (`HANDLERS`, by kind); a Segment call
runs the pure step against the user's state.

Every handler is synchronous: state read, state written, and the work still to finish
(deliveries, dead letters, records) returned as awaitables that the record's
acknowledgement waits for (`streams.runtime.acks.AckTracker`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from streams.core import control, dedupe, positions, seenpack
from streams.core.control import (
    CaughtUp,
    GroupKnown,
    GroupUpdate,
    GroupWait,
    MergeDone,
    MergeProfile,
    MergeRequest,
    Park,
    PendingDone,
    Retried,
    RetryDue,
    Sweep,
    WindowClose,
    WindowDone,
)
from streams.core.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_HEADER, REPLAY_OF_HEADER
from streams.core.incoming import Incoming
from streams.core.message import Message
from streams.core.outcome import Dispatch, Step
from streams.core.pending import confirm, first_seq
from streams.core.releasing import release_ready
from streams.core.segment import parse
from streams.core.spill import SpillDone
from streams.core.step import step
from streams.runtime import aggregation, effects, groups, merge, retries, spilling, sweep
from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

Work = list[Awaitable[Any]]
Handler = Callable[[Runtime, Incoming, Any], Work]


def pending_done(rt: Runtime, record: Incoming, done: PendingDone) -> Work:
    """A released event's delivery finished: it leaves `releasing`, and held events
    that waited for room there (streams.core.releasing.release_ready's limit) follow."""
    assert record.key is not None  # control records to a user are keyed by the user
    key = record.key.decode("utf-8")
    pending = confirmed = confirm(rt.rows.pending(key), done.destination, done.seq)
    released: list[Dispatch] = []
    user, destination = rt.rows.user(key), rt.destination(done.destination)
    held = pending.queue(done.destination).held
    if user is not None and destination is not None and held and rt.parking.marks.parking[(key, done.destination)] == 0:
        limit = rt.settings.pending_max_events
        pending, released = release_ready(pending, destination, user, rt.groups.of(user), limit)
    work: Work = []
    if user is None or pending == confirmed:
        rt.rows.store_pending(key, pending)  # (apply_step writes only what differs from `confirmed`)
    if user is not None:
        # As after a call, the released events no delivery in this process carries are
        # sent again: this record handled again (a revoke or a crash stopped its first
        # handling's deliveries) finds in `releasing` what that one released, and
        # nothing else would send it if the user sends nothing more.
        work = effects.apply_step(rt, key, confirmed, Step(user, None, pending, released), stored=user)
    # Only now is the event out of `releasing`; until this record is applied, a later
    # event of the user must not send it again.
    rt.sending.in_flight.discard((key, done.destination, done.seq))
    return work


def caught_up(rt: Runtime, record: Incoming, marker: CaughtUp) -> Work:
    """This worker's caught-up record, read back: the partition's deliveries no longer
    wait (streams.runtime.catchup). Another worker's, or an earlier one's, is ignored."""
    if rt.parking.catchup.reached(record.partition, marker.token):
        rt.counters["caught_up"] += 1
    return []


# Control record kind -> its handler (read-only: built once, here).
HANDLERS: Mapping[type, Handler] = MappingProxyType(
    {
        PendingDone: pending_done,
        MergeRequest: merge.give_profile,
        MergeProfile: merge.take_profile,
        MergeDone: merge.handed,
        GroupUpdate: groups.update_group,
        GroupWait: groups.add_waiter,
        GroupKnown: groups.group_known,
        Sweep: sweep.sweep,
        Park: retries.apply_park,
        RetryDue: retries.start_retries,
        Retried: retries.apply_retried,
        WindowClose: aggregation.window_close,
        WindowDone: aggregation.window_done,
        CaughtUp: caught_up,
        SpillDone: spilling.spill_done,
    }
)


def handle(rt: Runtime, record: Incoming) -> Work:
    """The synchronous part of routing one by-user record."""
    instruction = control.decode(record.headers, record.value)
    if instruction is not None:
        return HANDLERS[type(instruction)](rt, record, instruction)
    return route_call(rt, record)


def route_call(rt: Runtime, record: Incoming, msg: Message | None = None) -> Work:
    """A Segment call (`msg`, when parsed already): dedupe, forward if the key was
    merged into a user, else the pure step against the user's state, and its state
    written and work started."""
    assert record.key is not None  # intake keys every by-user record by its user
    key = record.key.decode("utf-8")
    headers = record.headers
    raw_bytes = record.value
    if msg is None:
        msg = parse(raw_bytes)  # validated by intake already
    replay = REPLAY_HEADER in headers
    replay_of = headers[REPLAY_OF_HEADER].decode("utf-8", "replace") if REPLAY_OF_HEADER in headers else None
    source = record.original_source()  # read once: the step's, an aggregate's request's, the position's
    # A replayed dead letter's row is its identity's, any other call's its messageId's.
    row_key = dedupe.row_key(key, msg.message_id if replay_of is None else replay_of, replay=replay_of is not None)
    known, legacy, user, pending, groups_seen = rt.rows.read(key, record.partition, row_key, msg, rt.groups)
    position = first_position(rt, record, replay_of, source, known)
    # Before any forwarding: a copy of an anonymous message that arrives after the
    # visitor logged in must meet the first copy's record, which is on this key.
    if not first_routing(rt, msg.message_id, position, record.partition, row_key, known, legacy, replay, replay_of):
        rt.counters["duplicates"] += 1
        return []
    if user is not None and user.merged_into:
        # An anonymous visitor who has logged in: their state lives with the user now.
        # One after another per user, so forwarded events keep their order.
        into = user.merged_into
        return [rt.sending.senders.submit((into, "forward"), lambda: effects.forward(rt, into, raw_bytes, headers))]
    destinations = rt.destinations
    if replay and REPLAY_DESTINATION_HEADER in headers:
        only = headers[REPLAY_DESTINATION_HEADER].decode("utf-8", "replace")
        destinations = [d for d in rt.destinations if d.key == only]
    now = rt.clock()
    now_iso = datetime.fromtimestamp(now, UTC).isoformat()
    s = rt.settings
    result = step(
        key,
        msg,
        raw_bytes.decode("utf-8"),
        source,
        user,
        pending,
        groups_seen,
        destinations,
        now=now,
        now_iso=now_iso,
        max_pending=s.pending_max_events,
        max_pending_age=s.pending_max_age_seconds,
        blocked=frozenset(d.key for d in destinations if rt.parking.marks.parking[(key, d.key)] > 0),
        memories=rt.memories,
        seq=first_seq(position),
        watch=rt.consent,
    )
    rt.observer.routed(key, msg, result.user, result.group, now)  # the console's group and account index
    for dest, _reason in result.skipped:
        rt.counters[f"skipped.{dest}"] += 1
    for dest, _reason in result.held:
        rt.counters[f"held.{dest}"] += 1
    for dest in result.denied:
        rt.counters[f"consent.{dest}"] += 1
    work = effects.apply_step(rt, key, pending, result, stored=user)
    # aggregate = ... in the mapping file; a request past the windows row's bound goes alone
    for f in aggregation.fold_call(rt, key, position, result.folds, now) if result.folds else ():
        alone = Dispatch(f.destination, f.request, raw_bytes.decode("utf-8"), dict(source), msg.message_id)
        work.append(effects.dispatch(rt, key, alone))
    if result.merge_from is not None:
        work.append(effects.control_to_user(rt, result.merge_from, MergeRequest(into=key)))
    if result.group is not None:  # written by the group's own partition (streams.runtime.groups)
        rt.groups.note(result.group)
        update = GroupUpdate(raw_bytes.decode("utf-8"), now_iso)
        work.append(effects.control_to_user(rt, result.group.group_id, update))
    if result.wait_for is not None:
        group_id, seen = result.wait_for
        work.append(effects.control_to_user(rt, group_id, GroupWait(key, seen)))
    return work


def first_position(rt: Runtime, record: Incoming, replay_of: str | None, source: dict[str, Any], known: Any) -> int:
    """The position `record` had when it was first routed: its own, except for a by-user
    copy of an input record that was routed in place before (CS_RELAY_INPUT_KEYED_BY_USER
    turned off, or an older worker, while its work was unfinished): that one finds its
    dedupe row (`known`, of its messageId) at the input record's position, and must
    number what it holds as it did then, or the redo would be dropped as a duplicate.
    Only that exact input record (same partition and offset, as intake recorded it) can
    have left that row."""
    if record.from_input or replay_of is not None:
        return record.position
    if source.get("topic") != rt.settings.input_topic or source.get("partition") != record.partition:
        return record.position
    try:
        in_place = positions.position(int(source["offset"]), from_input=True)
    except (KeyError, TypeError, ValueError):
        return record.position
    return in_place if known and int(known[0]) == in_place else record.position


def first_routing(
    rt: Runtime,
    message_id: str,
    offset: int,
    partition: int,
    row_key: str,
    known: Any,
    legacy: dedupe.Seen,
    replay: bool,
    replay_of: str | None,
) -> bool:
    """False for a duplicate messageId within the window (streams.core.dedupe); a replayed
    dead letter is routed again on purpose, once per dead letter (`replay_of`). One row
    per id (`row_key`, read as `known`): for a new id, an index row in the store and an
    entry of the partition's packed row (`SeenPacks.remember`, in the state door
    streams.runtime.rows), however many ids the user has routed. `legacy`: the user's
    row of an older version, one for all its ids."""
    window, now = rt.settings.dedupe_window_seconds, rt.clock()
    by_identity = replay_of is not None
    verdict = dedupe.classify_row(known, offset, now, window)
    if verdict is dedupe.Verdict.NEW and not legacy.empty:  # perhaps routed by an older version
        known = dedupe.legacy_entry(legacy, message_id if replay_of is None else replay_of, replay=by_identity)
        verdict = dedupe.classify_row(known, offset, now, window)
    if verdict is dedupe.Verdict.DUPLICATE and replay and not by_identity:
        verdict = dedupe.Verdict.NEW  # a replay of an older version, without its identity: routed again
    if verdict is dedupe.Verdict.DUPLICATE:
        if by_identity:
            log.info("dead letter %s replayed again for a user: dropped", replay_of)
        else:
            log.info("duplicate messageId %s for a user: dropped", message_id)
        return False
    if verdict is dedupe.Verdict.NEW:
        rt.seen_packs.remember(partition, row_key, offset, now)
    elif seenpack.is_packed_index(known):  # redone: its packed row may not have reached Kafka
        rt.seen_packs.remember(partition, row_key, offset, float(known[1]))
    return True
