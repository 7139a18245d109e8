"""Events that wait, per user and per destination, kept in arrival order.

A destination cannot always attribute an event when it arrives (ClientSuccess before
the user's group call, CustomerSuccessBox before an account id is known). Such events
are *held*. When the state can attribute them they are *released*: they move to
`releasing`, are sent in order, and are removed from `releasing` only when the
delivery client confirms them (a `pending-done` control record, processed in the
user's own partition). A crash in between leaves them in `releasing`, and the next
event for the user sends them again: at least once, never lost.

Bounds: at most `max_events` held per user and destination, and none older than
`max_age` seconds. What exceeds a bound is returned as overflow for the dead-letter
topic, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streams.core.versions import STATE_VERSION, check_version


@dataclass(frozen=True)
class Item:
    """One waiting event: its sequence number, when it was held, and the original record."""

    seq: int
    held_at: float  # unix seconds
    raw: str  # the original message text (valid UTF-8 JSON), so a dead letter keeps its bytes
    source: Mapping[str, Any] = field(default_factory=dict)  # topic, partition, offset

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "held_at": self.held_at, "raw": self.raw, "source": dict(self.source)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Item:
        return cls(data["seq"], data["held_at"], data["raw"], data.get("source") or {})


@dataclass(frozen=True)
class Parked:
    """A delivery that failed in a retryable way (408, 429, 5xx, timeout, connection
    error): kept here, durably, until a retry succeeds, fails for good, or the retry
    window ends. While a destination has parked deliveries for a user, that user's
    later events for it wait behind them."""

    seq: int
    raw: str
    source: Mapping[str, Any]
    request: Mapping[str, Any]  # PartnerRequest.to_dict(): what to send again
    message_id: str
    first_failed_at: float
    attempts: int  # HTTP attempts so far
    next_at: float  # when the head may be tried again (unix seconds)
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "raw": self.raw,
            "source": dict(self.source),
            "request": dict(self.request),
            "message_id": self.message_id,
            "first_failed_at": self.first_failed_at,
            "attempts": self.attempts,
            "next_at": self.next_at,
            "last_error": self.last_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Parked:
        return cls(
            data["seq"],
            data["raw"],
            data.get("source") or {},
            data["request"],
            data.get("message_id", ""),
            data["first_failed_at"],
            data["attempts"],
            data["next_at"],
            data.get("last_error", ""),
        )


@dataclass(frozen=True)
class Queue:
    held: tuple[Item, ...] = ()
    releasing: tuple[Item, ...] = ()
    parked: tuple[Parked, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.held or self.releasing or self.parked)


_NO_QUEUE = Queue()  # a destination with nothing waiting (frozen: shared)


@dataclass(frozen=True)
class Pending:
    """A user's waiting events for every destination."""

    next_seq: int = 1
    queues: Mapping[str, Queue] = field(default_factory=dict)

    def queue(self, destination: str) -> Queue:
        found = self.queues.get(destination)
        return _NO_QUEUE if found is None else found  # asked ~18 times a track: no new Queue each

    def with_queue(self, destination: str, queue: Queue) -> Pending:
        queues = dict(self.queues)
        if queue:
            queues[destination] = queue
        else:
            queues.pop(destination, None)
        return replace(self, queues=queues)

    def is_empty(self) -> bool:
        return not any(self.queues.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "next_seq": self.next_seq,
            "queues": {
                dest: {
                    "held": [i.to_dict() for i in q.held],
                    "releasing": [i.to_dict() for i in q.releasing],
                    "parked": [p.to_dict() for p in q.parked],
                }
                for dest, q in self.queues.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Pending:
        if not data:
            return cls()
        check_version(data, "pending")
        queues = {
            dest: Queue(
                held=tuple(Item.from_dict(i) for i in q.get("held") or ()),
                releasing=tuple(Item.from_dict(i) for i in q.get("releasing") or ()),
                parked=tuple(Parked.from_dict(p) for p in q.get("parked") or ()),
            )
            for dest, q in (data.get("queues") or {}).items()
        }
        return cls(next_seq=data.get("next_seq", 1), queues=queues)


SEQ_SPAN = 1 << 20  # more sequence numbers than one record of the by-user topic can ever take


def first_seq(offset: int) -> int:
    """The first sequence number of the events that the by-user record at `offset`
    adds to its user's pending record (a held event, a parked delivery, a merged
    visitor's events: `first_seq + i`). Numbers come from the record, not from a
    counter in the pending record, so that:
    * they never repeat for a user, though an empty record is deleted (a late
      pending-done for an old number must not confirm a new event);
    * a record processed again (the redo after a crash) gives its events the same
      numbers, and finds them already there instead of adding them twice."""
    return max(1, offset * SEQ_SPAN)


def hold(
    pending: Pending,
    destination: str,
    raw: str,
    source: Mapping[str, Any],
    now: float,
    max_events: int,
    seq: int | None = None,
) -> tuple[Pending, list[Item]]:
    """Append an event to the destination's held queue; returns the overflow (oldest
    first). `seq`: the event's number (`first_seq` of its by-user record's offset); an
    event already in the queue under it (its record processed again) is not held twice."""
    seq = pending.next_seq if seq is None else seq
    queue = pending.queue(destination)
    if has_seq(queue, seq):
        return pending, []
    item = Item(seq, now, raw, source)
    held = (*queue.held, item)
    overflow: list[Item] = []
    if len(held) > max_events:
        cut = len(held) - max_events
        overflow, held = list(held[:cut]), held[cut:]
    pending = replace(pending, next_seq=max(pending.next_seq, seq + 1))
    return pending.with_queue(destination, replace(queue, held=held)), overflow


def has_seq(queue: Queue, seq: int) -> bool:
    return any(i.seq == seq for i in (*queue.held, *queue.releasing)) or any(p.seq == seq for p in queue.parked)


def expire(pending: Pending, now: float, max_age: float) -> tuple[Pending, list[tuple[str, Item]]]:
    """Remove held events older than `max_age`; returns them with their destination."""
    expired: list[tuple[str, Item]] = []
    for dest, queue in list(pending.queues.items()):
        keep = tuple(i for i in queue.held if now - i.held_at <= max_age)
        if len(keep) != len(queue.held):
            expired.extend((dest, i) for i in queue.held if now - i.held_at > max_age)
            pending = pending.with_queue(dest, replace(queue, held=keep))
    return pending, expired


def release(pending: Pending, destination: str, count: int) -> tuple[Pending, tuple[Item, ...]]:
    """Move the first `count` held events of a destination to `releasing`; returns them."""
    queue = pending.queue(destination)
    if count <= 0 or not queue.held:
        return pending, ()
    moved, rest = queue.held[:count], queue.held[count:]
    return pending.with_queue(destination, replace(queue, held=rest, releasing=(*queue.releasing, *moved))), moved


def confirm(pending: Pending, destination: str, seq: int) -> Pending:
    """Forget the released event `seq` of a destination: its delivery is finished.
    Only that one: released numbers are not in order (a visitor's adopted events go
    first but are numbered from the later hand-over record; input and by-user records
    are numbered apart, streams.core.positions), and each event is confirmed by its
    own pending-done."""
    queue = pending.queue(destination)
    releasing = tuple(i for i in queue.releasing if i.seq != seq)
    if len(releasing) == len(queue.releasing):
        return pending
    return pending.with_queue(destination, replace(queue, releasing=releasing))


def adopt(
    pending: Pending, earlier: Pending, first: int | None = None, max_events: int | None = None
) -> tuple[Pending, list[tuple[str, Item]]]:
    """Take over another profile's waiting events (an anonymous profile after login).
    They happened before this user's held events, so they go first; parked and
    released ones whose delivery was never confirmed are held again (sent at least
    once). They are numbered from `first` (`first_seq` of the record that brings them);
    if the first of them is here already, this record was processed before: nothing
    changes. A destination's held queue keeps its bound: of the adopted events beyond
    `max_events` (with the user's own held ones), the newest are returned, oldest first,
    for the dead-letter topic (as a hand-over too large for one record is cut:
    streams.core.pendingrows.fit), so that replayed they come after the rest."""
    next_seq = pending.next_seq if first is None else first
    if first is not None and any(has_seq(q, first) for q in pending.queues.values()):
        return pending, []
    overflow: list[tuple[str, Item]] = []
    for dest, queue in earlier.queues.items():
        moved = []
        for parked in queue.parked:
            moved.append(Item(next_seq, parked.first_failed_at, parked.raw, parked.source))
            next_seq += 1
        for item in (*queue.releasing, *queue.held):
            moved.append(replace(item, seq=next_seq))
            next_seq += 1
        mine = pending.queue(dest)
        if max_events is not None and len(moved) + len(mine.held) > max_events:
            room = max(0, max_events - len(mine.held))
            overflow += [(dest, item) for item in moved[room:]]
            moved = moved[:room]
        pending = pending.with_queue(dest, replace(mine, held=(*moved, *mine.held)))
    return replace(pending, next_seq=max(pending.next_seq, next_seq)), overflow


# ------------------------------------------------------------------ parked deliveries


def park(
    pending: Pending, destination: str, parked: Parked, released_seq: int | None = None, seq: int | None = None
) -> Pending:
    """Append a failed delivery to the destination's parked queue (after any already
    there: order per user is kept). A released event that parks leaves `releasing`
    and keeps its number; another is numbered `seq` (its call's, or the park record's).
    A delivery parked under that number already (the park record processed again, or
    its call redone and parked again) is not parked twice; nor is a call that waits
    under that number already (redone after a crash, it was held behind a delivery
    parked meanwhile: it goes when released)."""
    queue = pending.queue(destination)
    number = released_seq if released_seq is not None else (pending.next_seq if seq is None else seq)
    if any(p.seq == number for p in queue.parked) or (released_seq is None and has_seq(queue, number)):
        return pending
    releasing = queue.releasing
    if released_seq is not None:
        releasing = tuple(i for i in releasing if i.seq != released_seq)
    item = replace(parked, seq=number)
    pending = replace(pending, next_seq=max(pending.next_seq, number + 1))
    return pending.with_queue(destination, replace(queue, releasing=releasing, parked=(*queue.parked, item)))


def parked_full(pending: Pending, destination: str, max_events: int, released_seq: int | None, seq: int) -> bool:
    """Whether a delivery to park (numbered `released_seq`, else `seq`) finds the
    destination's parked queue at its bound (and is not parked there already)."""
    queue = pending.queue(destination)
    number = released_seq if released_seq is not None else seq
    there = any(p.seq == number for p in queue.parked) or (released_seq is None and has_seq(queue, number))
    return len(queue.parked) >= max_events and not there


def expire_parked(
    pending: Pending, now: float, window: float, busy: Callable[[str, int], bool] = lambda dest, seq: False
) -> tuple[Pending, list[tuple[str, Parked]]]:
    """Remove parked deliveries that first failed more than `window` seconds ago (the
    sweep gives up on them even when no retry result comes: a partition that lost its
    retries, a destination paused for good); returns them with their destination.
    `busy(dest, seq)`: a retry of it is under way, whose `retried` record decides. A
    new head is due at once."""
    expired: list[tuple[str, Parked]] = []
    for dest, queue in list(pending.queues.items()):
        old = [p for p in queue.parked if now - p.first_failed_at > window and not busy(dest, p.seq)]
        if not old:
            continue
        expired.extend((dest, p) for p in old)
        keep = tuple(p for p in queue.parked if p not in old)
        if keep and keep[0] is not queue.parked[0]:
            keep = (replace(keep[0], next_at=min(keep[0].next_at, now)), *keep[1:])
        pending = pending.with_queue(dest, replace(queue, parked=keep))
    return pending, expired


def next_retry_at(pending: Pending) -> float | None:
    """The earliest retry time among the parked heads, or None."""
    times = [q.parked[0].next_at for q in pending.queues.values() if q.parked]
    return min(times) if times else None


def retried(
    pending: Pending,
    destination: str,
    seq: int,
    *,
    outcome: str,
    error: str,
    now: float,
    delay: float,
    window: float,
    attempts: int = 1,
) -> tuple[Pending, Parked | None]:
    """Apply the outcome ("done", "retry" or "fail") of retrying the parked head `seq`.

    "done" removes the head and makes the next one due at once. "retry" sets the
    head's next try `delay` seconds ahead, unless that would pass the retry window
    since its first failure: then, as for "fail", the head is removed and returned for
    the dead-letter topic. Returns the new pending and the head given up on, if any."""
    queue = pending.queue(destination)
    if not queue.parked or queue.parked[0].seq != seq:
        return pending, None  # a stale result (the head changed): nothing to do
    head, rest = queue.parked[0], queue.parked[1:]
    head = replace(head, attempts=head.attempts + attempts, last_error=error)
    if outcome == "retry" and now + delay - head.first_failed_at <= window:
        head = replace(head, next_at=now + delay)
        return pending.with_queue(destination, replace(queue, parked=(head, *rest))), None
    if rest:
        rest = (replace(rest[0], next_at=min(rest[0].next_at, now)), *rest[1:])
    given_up = None if outcome == "done" else head
    return pending.with_queue(destination, replace(queue, parked=rest)), given_up
