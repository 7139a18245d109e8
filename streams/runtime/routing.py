"""The routing door: what `route` does with one by-user record, in the partition that
owns its key (`handle`, called by streams.runtime.intake once per record). A control
record goes to its kind's handler (`streams.runtime.handlers.HANDLERS`); a Segment call
is routed here (`route_call`): dedupe (`first_position`, `first_routing`), the pure
step against the user's state (read in one call into the state door,
streams.runtime.rows), the step's state written and its deliveries dispatched
(`apply_step`, `Deliveries`: each to the user's chain, or spilled past its share,
streams.runtime.spilling; the chains' ones handed to streams.runtime.senders in one
call per step). The cold effects (a forwarded event, dead letters, control records, a
park) are streams.runtime.effects'.

Everything here is synchronous: state read, state written, and the work still to
finish returned as awaitables that the record's acknowledgement waits for
(`streams.runtime.acks.AckTracker`): work that fails leaves the event unacknowledged,
and a restart processes it again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.core import control, dedupe, positions, seenpack
from streams.core.control import GroupUpdate, GroupWait, MergeRequest
from streams.core.deadletter import REPLAY_DESTINATION_HEADER, REPLAY_HEADER, REPLAY_OF_HEADER
from streams.core.incoming import Incoming
from streams.core.message import Message
from streams.core.outcome import Dispatch, Step
from streams.core.pending import Pending, first_seq
from streams.core.releasing import Resend, resolve_releasing
from streams.core.segment import parse
from streams.core.state import UserState
from streams.core.step import step
from streams.runtime import aggregation, effects, spilling
from streams.runtime import senders as senders_mod
from streams.runtime.senderpool import Make

if TYPE_CHECKING:
    from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")

Work = list[Awaitable[Any]]
Kinds = Mapping[type, Callable[["Runtime", Incoming, Any], Work]]  # a control record's kind -> its handler
_UNREAD = object()  # apply_step: the user's row not read by the caller


# ---------------------------------------------------------------- a by-user record


def handle(rt: Runtime, record: Incoming, kinds: Kinds) -> Work:
    """The synchronous part of routing one by-user record: a control record handed to
    its kind's handler in `kinds` (streams.runtime.handlers.HANDLERS, given by intake:
    the handlers import the flows, which import this door), a Segment call routed."""
    instruction = control.decode(record.headers, record.value)
    if instruction is not None:
        return kinds[type(instruction)](rt, record, instruction)
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
    deliveries = Deliveries(rt, key)  # the step's and the folds' alone: to the senders in one call
    try:
        work = apply_step(rt, key, pending, result, stored=user, deliveries=deliveries)
        # aggregate = ... in the mapping file; a request past the windows row's bound goes alone
        for f in aggregation.fold_call(rt, key, position, result.folds, now) if result.folds else ():
            deliveries.add(Dispatch(f.destination, f.request, raw_bytes.decode("utf-8"), dict(source), msg.message_id))
    except BaseException:
        deliveries.start()  # what was dispatched before goes, as when each went at once
        raise
    work += deliveries.start()
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


# ---------------------------------------------------------------- a step's state and work


def apply_step(
    rt: Runtime,
    key: str,
    before: Pending,
    result: Step,
    stored: UserState | None | object = _UNREAD,
    deliveries: Deliveries | None = None,
) -> list[Awaitable[Any]]:
    """Write a step's state (assigned back, so the changelog has it) and start its work:
    dead letters, deliveries, and the released events that no delivery in this process
    is carrying (after a restart, `releasing` may hold events whose delivery died with
    the previous process: they are sent again rather than lost). `stored`: the user's
    row as the caller read it for the step, if it did (not read again). The deliveries
    (those sent again, then the step's) are added to `deliveries` if given, which the
    caller then starts with more of its own, else to a `Deliveries` of their own,
    started here: into the senders in one call (`Deliveries`)."""
    if stored is _UNREAD:
        stored = rt.rows.user(key)  # written only when it changed (last_seen moves once a minute)
    if result.user is not stored and result.user != stored:
        rt.tables.users[key] = result.user.to_dict()
    if any(queue.releasing for queue in before.queues.values()):
        # Released events to decide again: the user's groups (a read of the group view,
        # streams.runtime.groupview) only then.
        resend = resolve_releasing(
            before,
            result.pending,
            rt.destinations,
            result.user,
            rt.groups.of(result.user),
            lambda d, seq: (key, d, seq) in rt.sending.in_flight,
        )
    else:
        resend = Resend(result.pending, [], [], [])
    if resend.pending != before:
        rt.rows.store_pending(key, resend.pending)  # a write through the state's door
    for dest, why in resend.skipped:  # released, and the destination's rules changed since
        rt.counters[f"skipped.{dest}"] += 1
        log.info("a released event is no longer taken by %s: %s", dest, why)
    work: list[Awaitable[Any]] = []
    if result.dead_letters or resend.dead_letters:
        key_bytes = key.encode("utf-8")
        work += [effects.dead_letter(rt, d, key_bytes) for d in (*result.dead_letters, *resend.dead_letters)]
    # What parks have been applied in this process so far (`ParkingMarks.parks`): a
    # delivery of a pair with no parked one now reads the pending row again only if a
    # park was applied since (`senders.deliver`).
    parks = rt.parking.marks.parks
    queues = resend.pending.queues
    mine = deliveries is None
    if deliveries is None:
        deliveries = Deliveries(rt, key)
    try:
        for d in (*resend.dispatches, *result.dispatches):
            queue = queues.get(d.destination)
            deliveries.add(d, parks if queue is None or not queue.parked else None)
    except BaseException:
        if mine:
            deliveries.start()  # what was dispatched before goes, as when each went at once
        raise
    if mine:
        work += deliveries.start()
    return work


class Deliveries:
    """A step's deliveries of a user, dispatched one at a time (`add`) and handed to
    the senders together (`start`: one `Senders.submit_all`, `streams.runtime.senders`,
    which runs `senders.deliver`). Each goes after the user's earlier deliveries to the
    same partner (its chain), in the order added; past the user's share, a call's
    delivery is spilled instead (`spilling.admit`; its work is then its rows' writes).

    Spilling is not asked, a read of what the spill store and the senders keep, while
    the chain is under its share and the pair has no spilled queue (`known`, complete
    once the store has read every owned partition). The chain's count is the senders'
    (`counts`) plus this step's deliveries of the pair not yet submitted: before asking
    spilling about a pair with some, those are submitted (`Senders.submit_all`, then a
    second call in the step), so that it counts them and its refill of the chain goes
    behind them, as when each delivery was submitted before the next was decided."""

    __slots__ = ("rt", "key", "work", "pieces")

    def __init__(self, rt: Runtime, key: str) -> None:
        self.rt, self.key = rt, key
        self.work: list[Any] = []  # the work of those spilled, or submitted already
        self.pieces: list[tuple[tuple[str, str], Make]] = []  # those to submit, in the order added

    def add(self, item: Dispatch, parks: int | None = None) -> None:
        """Dispatch `item`: to the user's chain, or spilled. `parks`: the count of parks
        applied (`ParkingMarks.parks`) when the user had no parked delivery for the
        partner (None: not known; `senders.deliver` reads the pending row)."""
        rt, key, pieces = self.rt, self.key, self.pieces
        if item.released_seq is not None:
            rt.sending.in_flight.add((key, item.destination, item.released_seq))
        pair, store = (key, item.destination), rt.spills
        counts, share = rt.sending.senders.counts, rt.settings.user_share
        ahead = sum(1 for p, _make in pieces if p == pair) if pieces else 0  # this step's, not submitted yet
        if counts[pair] + ahead >= share or not store.complete or pair in store.known:
            if ahead:
                self._submit()
            if spilling.admit(rt, key, item):
                self.work.append(spilling.written())
                return
        pieces.append((pair, functools.partial(senders_mod.deliver, rt, key, item, parks)))

    def start(self) -> Sequence[Awaitable[Any]]:
        """Submit what is left to submit; the work of every delivery added (the event
        waits for all of it)."""
        if not self.work:  # none spilled nor submitted yet: the common case
            return self.rt.sending.senders.submit_all(self.pieces) if self.pieces else []
        if self.pieces:
            self._submit()
        return self.work

    def _submit(self) -> None:
        self.work += self.rt.sending.senders.submit_all(self.pieces)
        self.pieces.clear()  # (`add` holds it)
