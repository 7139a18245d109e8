"""Held events leaving a user's queue: released, oldest first, once the state can
attribute them (`release_ready`); decided again after a restart when no delivery in
this process carries them (`resolve_releasing`, `resend_releasing`); or expired into
dead letters when they waited too long (`expire_held`). The step and the runtime call
these; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from streams.core import pending as pending_mod
from streams.core.decision import Decision, Hold, Reject, Send, Skip
from streams.core.destination import Destination, decide
from streams.core.message import InvalidMessage
from streams.core.outcome import DeadLetter, Dispatch, pending_dead_letter, reject_reason
from streams.core.pending import Item, Pending
from streams.core.reasons import Reason
from streams.core.segment import parse
from streams.core.state import GroupLookup, UserState


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
                reason, ident = reject_reason(decision.reason), f"{dest.key}#{item.seq}"
                dead.append(DeadLetter(reason, decision.detail, item.raw, item.source, "routing", dest.key, ident))
            else:
                skipped.append((dest.key, f"released, then no longer taken: {decision.reason}"))
            after = pending_mod.confirm(after, dest.key, item.seq)
        if again:
            queue = after.queue(dest.key)
            after = after.with_queue(dest.key, replace(queue, held=(*again, *queue.held)))
    return Resend(after, out, dead, skipped)


def expire_held(pending: Pending, now: float, max_age: float) -> tuple[Pending, list[DeadLetter]]:
    """Held events older than `max_age`, as dead letters (for users who went quiet: a
    user's own next message expires them too, in `step`)."""
    pending, expired = pending_mod.expire(pending, now, max_age)
    return pending, [pending_dead_letter(item, dest, Reason.PENDING_EXPIRED, max_age) for dest, item in expired]


def _decide_item(item: Item, dest: Destination, user: UserState, groups: GroupLookup) -> Dispatch | None:
    decision, message_id = _decision(item, dest, user, groups)
    return _dispatch(item, dest, decision, message_id) if isinstance(decision, Send) else None


def _decision(item: Item, dest: Destination, user: UserState, groups: GroupLookup) -> tuple[Decision, str]:
    """The destination's decision on a waiting event now, and its messageId."""
    try:
        msg = parse(item.raw.encode("utf-8"))
    except InvalidMessage as exc:  # it was valid when held; a newer rule may refuse it
        return Skip(f"no longer a valid call ({exc.reason})"), ""
    return decide(dest, msg, user, groups), msg.message_id


def _dispatch(item: Item, dest: Destination, decision: Send, message_id: str) -> Dispatch:
    return Dispatch(dest.key, decision.request, item.raw, item.source, message_id, item.seq)
