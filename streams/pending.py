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

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

from streams.state import STATE_VERSION, check_version

OVERFLOW = "pending_overflow"
EXPIRED = "pending_expired"


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
    def from_dict(cls, data: Mapping[str, Any]) -> "Item":
        return cls(data["seq"], data["held_at"], data["raw"], data.get("source") or {})


@dataclass(frozen=True)
class Queue:
    held: tuple[Item, ...] = ()
    releasing: tuple[Item, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.held or self.releasing)


@dataclass(frozen=True)
class Pending:
    """A user's waiting events for every destination."""

    next_seq: int = 1
    queues: Mapping[str, Queue] = field(default_factory=dict)

    def queue(self, destination: str) -> Queue:
        return self.queues.get(destination, Queue())

    def with_queue(self, destination: str, queue: Queue) -> "Pending":
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
                }
                for dest, q in self.queues.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Pending":
        if not data:
            return cls()
        check_version(data, "pending")
        queues = {
            dest: Queue(
                held=tuple(Item.from_dict(i) for i in q.get("held") or ()),
                releasing=tuple(Item.from_dict(i) for i in q.get("releasing") or ()),
            )
            for dest, q in (data.get("queues") or {}).items()
        }
        return cls(next_seq=data.get("next_seq", 1), queues=queues)


def hold(
    pending: Pending, destination: str, raw: str, source: Mapping[str, Any], now: float, max_events: int
) -> tuple[Pending, list[Item]]:
    """Append an event to the destination's held queue; returns the overflow (oldest first)."""
    item = Item(pending.next_seq, now, raw, source)
    queue = pending.queue(destination)
    held = (*queue.held, item)
    overflow: list[Item] = []
    if len(held) > max_events:
        cut = len(held) - max_events
        overflow, held = list(held[:cut]), held[cut:]
    pending = replace(pending, next_seq=pending.next_seq + 1)
    return pending.with_queue(destination, replace(queue, held=held)), overflow


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
    return pending.with_queue(destination, Queue(held=rest, releasing=(*queue.releasing, *moved))), moved


def confirm(pending: Pending, destination: str, up_to_seq: int) -> Pending:
    """Forget released events of a destination whose delivery is finished."""
    queue = pending.queue(destination)
    releasing = tuple(i for i in queue.releasing if i.seq > up_to_seq)
    return pending.with_queue(destination, replace(queue, releasing=releasing))


def adopt(pending: Pending, earlier: Pending) -> Pending:
    """Take over another profile's waiting events (an anonymous profile after login).
    They happened before this user's held events, so they go first; released ones
    whose delivery was never confirmed are held again (sent at least once)."""
    next_seq = pending.next_seq
    for dest, queue in earlier.queues.items():
        moved = []
        for item in (*queue.releasing, *queue.held):
            moved.append(replace(item, seq=next_seq))
            next_seq += 1
        mine = pending.queue(dest)
        pending = pending.with_queue(dest, replace(mine, held=(*moved, *mine.held)))
    return replace(pending, next_seq=next_seq)


def held_at_iso(item: Item) -> str:
    return datetime.fromtimestamp(item.held_at).astimezone().isoformat()
