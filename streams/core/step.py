"""The business rule of cs-relay as one pure step: a Segment message and the user's
state in, the new state and what to send out.

`step()` is everything that happens to one message in the user's partition:

1. the user's record (and the group's, for a group call) is updated;
2. every enabled destination decides: send, hold, skip or reject;
3. a destination that already holds or parks events for the user holds this one
   behind them, so a user's events reach each partner in order;
4. held events that the new state can attribute are released, oldest first;
5. held events beyond the count or age bound become dead letters.

The runtime (`streams.runtime.handlers`) reads the tables, calls `step()`, writes the tables
and hands the dispatches to the delivery client. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from streams.core import consent
from streams.core import pending as pending_mod
from streams.core.aggregate import Aggregation, Fold
from streams.core.consentview import group_seen_by, user_seen_by
from streams.core.decision import Decision, Hold, PartnerRequest, Reject, Send, Skip
from streams.core.grouplookup import with_copy
from streams.core.memory import Memory
from streams.core.message import InvalidMessage, Message, destination_enabled
from streams.core.pending import Item, Pending
from streams.core.reasons import Reason
from streams.core.reducers import anonymous_to_merge, apply_to_group, apply_to_user, merge_users
from streams.core.segment import parse
from streams.core.state import GroupLookup, GroupState, UserState
from streams.core.traits import latest_ids

# How long a user who logged in waits for the visitor's profile (the merge-profile
# record from the visitor's partition: normally within moments) before its own events
# stop waiting behind the visitor's.
MERGE_WAIT = 60.0


@dataclass(frozen=True)
class Destination:
    """A partner as the core sees it: its key, its Segment integration name, its rule."""

    key: str
    integration_name: str
    decide: Callable[[Message, UserState, GroupLookup], Decision]
    # `aggregate` of the mapping file: the window in seconds and the destination's rule
    # (both set, or neither); a request the rule names is folded, not sent.
    window: int | None = None
    aggregation: Aggregation | None = None
    # `consent` of the mapping file: the categories a call must grant (streams.core.consent).
    consent: frozenset[str] = frozenset()

    def fold(self, request: PartnerRequest) -> Fold | None:
        """The fold of `request` into a window, when this destination aggregates it."""
        if self.window is None or self.aggregation is None:
            return None
        name = self.aggregation.field(request)
        return Fold(self.key, request, name) if name is not None else None


@dataclass(frozen=True)
class Dispatch:
    """A request to deliver, with what a dead letter would need if it fails."""

    destination: str
    request: PartnerRequest
    raw: str
    source: Mapping[str, Any]
    message_id: str
    released_seq: int | None = None  # set when the event comes out of the pending queue
    # A call sent at once: the number it parks under (`first_seq` of its record, which
    # holds nothing for this destination), the same when the call is redone.
    seq: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason | str  # a str only for a destination's own reject reason not (yet) in the enum
    detail: str
    raw: str | bytes  # bytes: an input record that did not parse (it may not even be UTF-8)
    source: Mapping[str, Any]
    stage: str
    destination: str | None = None
    # What it is to its user, the same under redo: `destination#number` of the event
    # (streams.core.deadletter.identity_of); None when it has no number.
    ident: str | None = None


@dataclass(frozen=True)
class Step:
    user: UserState
    group: GroupState | None
    pending: Pending
    dispatches: list[Dispatch] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    held: list[tuple[str, str]] = field(default_factory=list)
    merge_from: str | None = None  # an anonymous profile to fold into this user
    folds: list[Fold] = field(default_factory=list)  # requests for the user's open windows
    # (groupId, updated_at of the record seen or None): the user began holding events
    # until that group is known; the group's partition is asked to say when it is.
    wait_for: tuple[str, str | None] | None = None
    denied: list[str] = field(default_factory=list)  # destinations consent kept the call from


def step(
    key: str,
    msg: Message,
    raw: str,
    source: Mapping[str, Any],
    user: UserState | None,
    pending: Pending,
    groups: GroupLookup,
    destinations: Sequence[Destination],
    *,
    now: float,
    now_iso: str,
    max_pending: int,
    max_pending_age: float,
    blocked: frozenset[str] = frozenset(),
    memories: Sequence[Memory] = (),
    seq: int | None = None,
    watch: Sequence[consent.Consented] | None = None,
) -> Step:
    """Apply one message to the state of user `key` and decide what every destination gets.
    `blocked` names destinations with a delivery of this user being parked right now
    (its park record not applied yet): they hold this message like a parked queue does.
    `memories` are what every registered destination remembers (enabled or not).
    `seq`: the number a held event gets (`streams.core.pending.first_seq` of the
    message's by-user offset: the same when the message is processed again).
    `watch`: every destination's consent categories, enabled or not (default: those of
    `destinations`); consent is judged once, here, before `integrations`."""
    groups = with_copy(groups, user)
    held_before = {dest.key for dest in destinations if pending.queue(dest.key).held}
    rules = destinations if watch is None else watch
    denied_to, watching = consent.denied(msg.context, rules), consent.watched(rules)
    new_user = apply_to_user(user, msg, now_iso, key, memories, denied_to, watching)
    merge_from = anonymous_to_merge(msg, new_user)
    if merge_from is not None:
        # Until the visitor's profile comes, this user's events wait behind the visitor's.
        ids = new_user.anonymous_ids
        if merge_from not in ids:
            ids = latest_ids((*ids, merge_from))
        since = new_user.merging_since if new_user.merging == merge_from else now
        new_user = replace(new_user, anonymous_ids=ids, merging=merge_from, merging_since=since)
    elif new_user.merging is not None and now - (new_user.merging_since or now) > MERGE_WAIT:
        new_user = replace(new_user, merging=None, merging_since=None)  # it never came: wait no longer
    new_group = None
    if msg.type == "group":
        assert msg.group_id is not None, "a group call has a groupId (segment.validate requires it)"
        new_group = apply_to_group(groups(msg.group_id), msg, now_iso, memories, denied_to, watching)
        new_user = replace(new_user, group_copy=new_group)
    lookup = _overlay(groups, new_group)

    dispatches: list[Dispatch] = []
    dead: list[DeadLetter] = []
    skipped: list[tuple[str, str]] = []
    held: list[tuple[str, str]] = []
    folds: list[Fold] = []

    pending, expired = pending_mod.expire(pending, now, max_pending_age)
    dead += [_pending_dead_letter(item, dest, Reason.PENDING_EXPIRED, max_pending_age) for dest, item in expired]

    denied: list[str] = []
    for dest in destinations:
        if dest.key in denied_to:  # before the integrations object, as Segment does
            denied.append(dest.key)
            continue
        if not destination_enabled(msg.integrations, dest.integration_name):
            skipped.append((dest.key, "disabled by the message's integrations"))
            continue
        decision = _decide(dest, msg, new_user, lookup)
        queue = pending.queue(dest.key)
        folded = dest.fold(decision.request) if isinstance(decision, Send) else None
        if folded is not None:
            # Aggregated: counted in its window, sent when the window closes (behind any
            # parked delivery of the user, like every delivery), so it need not wait here.
            folds.append(folded)
        elif isinstance(decision, Send) and (queue.held or queue.parked or dest.key in blocked):
            decision = Hold("earlier events of this user are waiting")
        elif isinstance(decision, Send) and new_user.merging is not None:
            decision = Hold("the events this visitor made before logging in come first (merge under way)")
        if folded is not None:
            pass
        elif isinstance(decision, Send):
            dispatches.append(Dispatch(dest.key, decision.request, raw, source, msg.message_id, seq=seq))
        elif isinstance(decision, Hold):
            pending, overflow = pending_mod.hold(pending, dest.key, raw, source, now, max_pending, seq)
            held.append((dest.key, decision.reason))
            dead += [_pending_dead_letter(i, dest.key, Reason.PENDING_OVERFLOW, max_pending) for i in overflow]
        elif isinstance(decision, Reject):
            ident = None if seq is None else f"{dest.key}#{seq}"
            dead.append(DeadLetter(_reason(decision.reason), decision.detail, raw, source, "routing", dest.key, ident))
        elif isinstance(decision, Skip):
            skipped.append((dest.key, decision.reason))

        if dest.key not in blocked:
            pending, released = release_ready(pending, dest, new_user, lookup, max_pending)
            dispatches += released

    wait_for = None
    group_id = msg.context_group_id or new_user.group_id
    if group_id and any(pending.queue(d.key).held for d in destinations if d.key not in held_before):
        seen = lookup(group_id)
        wait_for = (group_id, seen.updated_at if seen is not None else None)
    return Step(new_user, new_group, pending, dispatches, dead, skipped, held, merge_from, folds, wait_for, denied)


def merge_step(
    user: UserState,
    pending: Pending,
    anonymous: UserState | None,
    anonymous_pending: Pending,
    anonymous_id: str,
    groups: GroupLookup,
    destinations: Sequence[Destination],
    first: int | None = None,
    offset: int | None = None,
    max_pending: int | None = None,
) -> Step:
    """Fold an anonymous profile and its waiting events into the user, then release
    what the merged state can attribute (the visitor's early page views, say). The
    adopted events are numbered from `first` (`streams.core.pending.adopt`); `offset`,
    the merge-profile record's, is remembered in the user's `adopted`. Adopted events
    beyond `max_pending` held for a destination become dead letters (the newest)."""
    merged = merge_users(user, anonymous, anonymous_id, offset)
    pending, overflow = pending_mod.adopt(pending, anonymous_pending, first, max_pending)
    dead = [
        _pending_dead_letter(item, dest, Reason.PENDING_OVERFLOW, max_pending or 0, adopted_from=anonymous_id)
        for dest, item in overflow
    ]
    dispatches: list[Dispatch] = []
    for dest in destinations:
        pending, released = release_ready(pending, dest, merged, groups, max_pending)
        dispatches += released
    return Step(merged, None, pending, dispatches, dead)


def release_ready(
    pending: Pending, dest: Destination, user: UserState, groups: GroupLookup, limit: int | None = None
) -> tuple[Pending, list[Dispatch]]:
    """Release, oldest first, the held events of `dest` that the state now attributes
    (none while deliveries of the user to `dest` are parked: they go first; none while
    the user waits for a visitor's profile: its events go first). At most `limit`
    (CS_RELAY_PENDING_MAX_EVENTS) are `releasing` at once, so the index row keeps its
    bound (streams.core.pendingrows); the rest go with a later call of the user."""
    ready: list[Dispatch] = []
    if pending.queue(dest.key).parked or user.merging is not None:
        return pending, ready
    held = pending.queue(dest.key).held
    if limit is not None:
        held = held[: max(0, limit - len(pending.queue(dest.key).releasing))]
    for item in held:
        dispatch = _decide_item(item, dest, user, groups)
        if dispatch is None:
            break
        ready.append(dispatch)
    pending, _ = pending_mod.release(pending, dest.key, len(ready))
    return pending, ready


@dataclass(frozen=True)
class Resend:
    """What becomes of the released events no delivery in this process is carrying."""

    pending: Pending  # without those the destination no longer takes
    dispatches: list[Dispatch]  # sent again
    dead_letters: list[DeadLetter]  # refused by the destination's rules now
    skipped: list[tuple[str, str]]  # (destination, why): not taken now


def resend_releasing(
    pending: Pending,
    destinations: Iterable[Destination],
    user: UserState,
    groups: GroupLookup,
    in_flight: Callable[[str, int], bool],
) -> list[Dispatch]:
    """Dispatches for released events that no delivery in this process is carrying
    (after a restart): they are sent again rather than lost."""
    return resolve_releasing(pending, pending, destinations, user, groups, in_flight).dispatches


def resolve_releasing(
    before: Pending,
    after: Pending,
    destinations: Iterable[Destination],
    user: UserState,
    groups: GroupLookup,
    in_flight: Callable[[str, int], bool],
) -> Resend:
    """The released events of `before` that no delivery in this process is carrying
    (after a restart) are decided again: sent again rather than lost, or, when the
    destination's rules changed meanwhile (a mapping file, a new version), taken out
    of `releasing` (in `after`) as those rules say: held again (first), dead-lettered
    (refused) or skipped. Left there, they stayed in `releasing` for good."""
    out: list[Dispatch] = []
    dead: list[DeadLetter] = []
    skipped: list[tuple[str, str]] = []
    for dest in destinations:
        again: list[Item] = []
        for item in before.queue(dest.key).releasing:
            if in_flight(dest.key, item.seq):
                continue
            decision, message_id = _decision(item, dest, user, groups)
            if isinstance(decision, Send):
                out.append(_dispatch(item, dest, decision, message_id))
                continue
            if isinstance(decision, Hold):
                again.append(item)
            elif isinstance(decision, Reject):
                reason, ident = _reason(decision.reason), f"{dest.key}#{item.seq}"
                dead.append(DeadLetter(reason, decision.detail, item.raw, item.source, "routing", dest.key, ident))
            else:
                skipped.append((dest.key, f"released, then no longer taken: {decision.reason}"))
            after = pending_mod.confirm(after, dest.key, item.seq)
        if again:
            queue = after.queue(dest.key)
            after = after.with_queue(dest.key, replace(queue, held=(*again, *queue.held)))
    return Resend(after, out, dead, skipped)


def _decide_item(item: Item, dest: Destination, user: UserState, groups: GroupLookup) -> Dispatch | None:
    decision, message_id = _decision(item, dest, user, groups)
    return _dispatch(item, dest, decision, message_id) if isinstance(decision, Send) else None


def _decision(item: Item, dest: Destination, user: UserState, groups: GroupLookup) -> tuple[Decision, str]:
    """The destination's decision on a waiting event now, and its messageId."""
    try:
        msg = parse(item.raw.encode("utf-8"))
    except InvalidMessage as exc:  # it was valid when held; a newer rule may refuse it
        return Skip(f"no longer a valid call ({exc.reason})"), ""
    return _decide(dest, msg, user, groups), msg.message_id


def _decide(dest: Destination, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """The destination's decision on its own view of the state: what calls consent kept
    from it did not change for it (streams.core.consent)."""
    if not dest.consent:
        return dest.decide(msg, user, groups)

    def seen(group_id: str) -> GroupState | None:
        return group_seen_by(groups(group_id), dest.key)

    return dest.decide(msg, user_seen_by(user, dest.key), seen)


def _dispatch(item: Item, dest: Destination, decision: Send, message_id: str) -> Dispatch:
    return Dispatch(dest.key, decision.request, item.raw, item.source, message_id, item.seq)


def _overlay(groups: GroupLookup, changed: GroupState | None) -> GroupLookup:
    if changed is None:
        return groups

    def lookup(group_id: str) -> GroupState | None:
        return changed if group_id == changed.group_id else groups(group_id)

    return lookup


def expire_held(pending: Pending, now: float, max_age: float) -> tuple[Pending, list[DeadLetter]]:
    """Held events older than `max_age`, as dead letters (for users who went quiet: a
    user's own next message expires them too, in `step`)."""
    pending, expired = pending_mod.expire(pending, now, max_age)
    return pending, [_pending_dead_letter(item, dest, Reason.PENDING_EXPIRED, max_age) for dest, item in expired]


def _pending_dead_letter(
    item: Item, dest: str, reason: Reason, bound: float, adopted_from: str | None = None
) -> DeadLetter:
    if adopted_from is not None:
        detail = (
            f"taking over the events visitor {adopted_from!r} made before logging in would have made more than "
            f"{int(bound)} events wait for {dest} for this user; the newest went here: replay them "
            "(cs-relay dlq replay) to deliver them as this user"
        )
    elif reason == Reason.PENDING_OVERFLOW:
        detail = (
            f"more than {int(bound)} events waiting for {dest} for this user; the oldest was dropped from the queue"
        )
    else:
        detail = f"waited longer than {int(bound)} s for {dest} to be able to attribute it"
    return DeadLetter(reason, detail, item.raw, item.source, "routing", dest, f"{dest}#{item.seq}")


def _reason(text: str) -> Reason | str:
    """A destination's reject reason: the shared enum member when it is one; otherwise the
    destination's own word, kept as it is, so a new destination needs no core change."""
    try:
        return Reason(text)
    except ValueError:
        return text
