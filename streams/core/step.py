"""The business rule of cs-relay as one pure step: a Segment message and the user's
state in, the new state and what to send out.

`step()` is everything that happens to one message in the user's partition:

1. the user's record (and the group's, for a group call) is updated;
2. every enabled destination decides: send, hold, skip or reject;
3. a destination that already holds or parks events for the user holds this one
   behind them, so a user's events reach each partner in order;
4. held events that the new state can attribute are released, oldest first;
5. held events beyond the count or age bound become dead letters.

`merge_step()` is what happens when a visitor's profile reaches the user who logged in.

The runtime (`streams.runtime.handlers`) reads the tables, calls `step()`, writes the tables
and hands the dispatches to the delivery client. What a step returns: streams.core.outcome;
how held events leave the queue: streams.core.releasing. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from streams.core import consent
from streams.core import pending as pending_mod
from streams.core.aggregate import Fold
from streams.core.decision import Hold, Reject, Send, Skip
from streams.core.destination import Destination, decide
from streams.core.grouplookup import with_copy
from streams.core.memory import Memory
from streams.core.message import Message, destination_enabled
from streams.core.outcome import DeadLetter, Dispatch, Step, pending_dead_letter, reject_reason
from streams.core.pending import Pending
from streams.core.reasons import Reason
from streams.core.reducers import anonymous_to_merge, apply_to_group, apply_to_user, merge_users
from streams.core.releasing import release_ready
from streams.core.state import GroupLookup, GroupState, UserState
from streams.core.traits import latest_ids

# How long a user who logged in waits for the visitor's profile (the merge-profile
# record from the visitor's partition: normally within moments) before its own events
# stop waiting behind the visitor's.
MERGE_WAIT = 60.0


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
    dead += [pending_dead_letter(item, dest, Reason.PENDING_EXPIRED, max_pending_age) for dest, item in expired]

    denied: list[str] = []
    for dest in destinations:
        if dest.key in denied_to:  # before the integrations object, as Segment does
            denied.append(dest.key)
            continue
        if not destination_enabled(msg.integrations, dest.integration_name):
            skipped.append((dest.key, "disabled by the message's integrations"))
            continue
        decision = decide(dest, msg, new_user, lookup)
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
            dead += [pending_dead_letter(i, dest.key, Reason.PENDING_OVERFLOW, max_pending) for i in overflow]
        elif isinstance(decision, Reject):
            ident = None if seq is None else f"{dest.key}#{seq}"
            dead.append(
                DeadLetter(reject_reason(decision.reason), decision.detail, raw, source, "routing", dest.key, ident)
            )
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
        pending_dead_letter(item, dest, Reason.PENDING_OVERFLOW, max_pending or 0, adopted_from=anonymous_id)
        for dest, item in overflow
    ]
    dispatches: list[Dispatch] = []
    for dest in destinations:
        pending, released = release_ready(pending, dest, merged, groups, max_pending)
        dispatches += released
    return Step(merged, None, pending, dispatches, dead)


def _overlay(groups: GroupLookup, changed: GroupState | None) -> GroupLookup:
    if changed is None:
        return groups

    def lookup(group_id: str) -> GroupState | None:
        return changed if group_id == changed.group_id else groups(group_id)

    return lookup
