"""A user's spilled deliveries to one destination: the fairness rule and its rows.

A user's deliveries to a destination go one request at a time, in order (a chain per
user and destination). A user who sends thousands of calls at once (an import, a bot)
would keep that many deliveries in memory, each holding its event's acknowledgement,
until the worker's window of unacknowledged events is full and nobody else's event is
read. So each (user, destination) has a *share*: at most `share` deliveries in memory
(CS_RELAY_USER_SHARE). Past it, a call's delivery is *spilled*: written, in the
handling of its event, to durable rows of its own, and the event is acknowledged once
those writes are in Kafka. The spilled deliveries go out later, in order, through the
same chain, as it goes under its share. While a (user, destination) has spilled
deliveries, its later ones spill too (order). At most `max_events`
(CS_RELAY_SPILL_MAX_EVENTS) wait spilled per (user, destination); past that bound a
delivery goes to the chain as before (its event waits, and so, once the window is full,
does the partition).

The rows (keys in `index_key`, `order_key`, `body_key`), two changelog writes per
spilled delivery (each costs the event loop a few hundred microseconds in Faust, so
the queue's length is not written at each spill):

* an order row per delivery (table `spill`, keyed by user, destination and ordinal):
  the delivery's number, `seq` (`streams.core.pending.first_seq` of its call's record).
  Ordinals go up from 0 without a gap: a queue holds the ordinals from its first to
  the first without a row (`probe_next` finds it in a few reads; the worker keeps it);
* a body row per delivery (table `spillrows`, keyed by user, destination and `seq`):
  what to send and what a dead letter would need (`body_row`), with its ordinal, so
  that a call processed again (a redo after a crash) finds its row and writes no
  second copy;
* the queue's index row (table `spill`, keyed by user and destination): the ordinal of
  its first delivery not yet confirmed, written by confirmations only; absent while it
  is 0, and once the queue is empty (ordinals start again from 0). A few tens of bytes
  whatever the queue's length (`worst_index_bytes`).

A delivered (or parked, or dead-lettered) spilled delivery is confirmed by a
`spill-done` record (`SpillDone`) to the user's partition, which drops the queue's
head while it is among the record's numbers (`confirm`): a confirmation applied twice
finds the head moved on and changes nothing. A crash between a request and its
confirmation sends the request again (at least once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from streams.core.decision import PartnerRequest
from streams.core.outcome import Dispatch
from streams.core.pendingrows import INDEX_MAX_BYTES

SPILL_VERSION = 1
MAX_EVENTS_BOUND = 1_000_000  # the largest CS_RELAY_SPILL_MAX_EVENTS
MAX_SHARE = 10_000  # the largest CS_RELAY_USER_SHARE
BODY_MAX_BYTES = INDEX_MAX_BYTES  # a larger body row is not spilled (below the 1 MiB record limit)
DONE_MAX_SEQS = 1000  # numbers per spill-done record (about 21 KB at their longest)
_LONGEST_NUMBER = (1 << 63) - 1  # an ordinal or a seq: a position times 2**20, below 2**63


def index_key(user: str, destination: str) -> str:
    return json.dumps([user, destination], separators=(",", ":"))


def order_key(user: str, destination: str, ordinal: int) -> str:
    return json.dumps([user, destination, ordinal], separators=(",", ":"))


def body_key(user: str, destination: str, seq: int) -> str:
    return json.dumps([user, destination, seq], separators=(",", ":"))


def queue_of(key: str) -> tuple[str, str] | None:
    """(user, destination) of an index or order row's key; None for anything else."""
    try:
        parts = json.loads(key)
    except (TypeError, ValueError):
        return None
    if isinstance(parts, list) and len(parts) in (2, 3) and all(isinstance(p, str) for p in parts[:2]):
        return parts[0], parts[1]
    return None


def user_of(key: str) -> str:
    """The user of any key of the `spill` table (its rows live in the user's partition)."""
    try:
        parts = json.loads(key)
    except (TypeError, ValueError):
        return str(key)
    return str(parts[0]) if isinstance(parts, list) and parts else str(key)


@dataclass(frozen=True)
class SpillQueue:
    """The ordinals of a (user, destination)'s spilled deliveries: `first` to `next - 1`."""

    first: int = 0
    next: int = 0

    @property
    def size(self) -> int:
        return self.next - self.first

    def appended(self) -> SpillQueue:
        return SpillQueue(self.first, self.next + 1)

    def popped(self) -> SpillQueue:
        return SpillQueue(self.first + 1, self.next) if self.size > 0 else self

    def row(self) -> dict[str, int]:
        """The index row: the first ordinal (the next is where the order rows end)."""
        return {"v": SPILL_VERSION, "first": self.first}


def first_of(row: Mapping[str, Any] | None) -> int:
    """The first ordinal an index row holds (0 without one)."""
    if not row:
        return 0
    if int(row.get("v", 1)) > SPILL_VERSION:
        raise ValueError(f"spill row of version {row.get('v')}, newer than this worker's {SPILL_VERSION}")
    return int(row["first"])


def probe_next(first: int, exists: Callable[[int], bool]) -> int:
    """The first ordinal from `first` on without an order row (`exists(ordinal)`), in
    about 2 log2(length) reads: the rows from `first` to it have no gap."""
    if not exists(first):
        return first
    low, step = first, 1  # `low` exists
    while exists(low + step):
        low, step = low + step, step * 2
    high = low + step  # missing
    while high - low > 1:
        middle = (low + high) // 2
        if exists(middle):
            low = middle
        else:
            high = middle
    return high


def worst_index_bytes() -> int:
    """The largest index row (JSON bytes): constant, whatever the queue's length."""
    row = SpillQueue(_LONGEST_NUMBER, _LONGEST_NUMBER).row()
    return len(json.dumps(row, separators=(",", ":")))


def should_spill(active: int, queued: int, *, share: int, max_events: int) -> bool:
    """Whether a (user, destination) with `active` deliveries in memory and `queued`
    spilled spills its next one: it is past its share or has spilled ones already
    (order), and the spill queue has room (`max_events`; 0 turns spilling off)."""
    return queued < max_events and (queued > 0 or active >= share)


def number_of(item: Dispatch) -> int | None:
    """The number a delivery is spilled under: a released event's (it stays in the
    user's `releasing` until delivered), else its call's; None: not spillable."""
    return item.released_seq if item.released_seq is not None else item.seq


def body_row(item: Dispatch, ordinal: int) -> dict[str, Any]:
    row = {
        "v": SPILL_VERSION,
        "n": ordinal,
        "request": item.request.to_dict(),
        "raw": item.raw,
        "source": dict(item.source),
        "message_id": item.message_id,
    }
    if item.released_seq is not None:
        row["released"] = True
    return row


def body_fits(row: Mapping[str, Any], max_bytes: int = BODY_MAX_BYTES) -> bool:
    return len(json.dumps(row, separators=(",", ":"))) <= max_bytes


def dispatch_of(row: Mapping[str, Any], destination: str, seq: int) -> Dispatch:
    """The delivery a body row holds, numbered `seq` (it parks under that number; a
    released event's is its number in `releasing`)."""
    request = PartnerRequest.from_dict(row["request"])
    if row.get("released"):
        return Dispatch(
            destination, request, row.get("raw", ""), row.get("source") or {}, row.get("message_id", ""), seq
        )
    return Dispatch(
        destination, request, row.get("raw", ""), row.get("source") or {}, row.get("message_id", ""), seq=seq
    )


def confirm(
    queue: SpillQueue, seq_at: Callable[[int], int | None], done: Iterable[int]
) -> tuple[SpillQueue, list[tuple[int, int | None]]]:
    """Drop the queue's head while its number is among `done` (or its order row is
    missing); returns the queue and the (ordinal, seq) dropped. Deliveries are confirmed
    in the order they went, so their numbers are found at the head; numbers not there
    (a confirmation applied before) change nothing."""
    numbers = set(done)
    dropped: list[tuple[int, int | None]] = []
    while queue.size > 0:
        seq = seq_at(queue.first)
        if seq is not None and seq not in numbers:
            break
        dropped.append((queue.first, seq))
        queue = queue.popped()
    return queue, dropped


@dataclass(frozen=True)
class SpillDone:
    """Spilled deliveries `seqs` of `destination` were delivered (or parked, or
    dead-lettered): drop them from the user's spill queue."""

    KIND: ClassVar[bytes] = b"spill-done"
    destination: str
    seqs: tuple[int, ...]

    def body(self) -> dict[str, Any]:
        return {"destination": self.destination, "seqs": list(self.seqs)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SpillDone:
        return cls(str(body["destination"]), tuple(int(s) for s in body["seqs"]))


def done_records(destination: str, seqs: Sequence[int], max_seqs: int = DONE_MAX_SEQS) -> list[SpillDone]:
    """`seqs` in records of at most `max_seqs` numbers each, in order."""
    return [SpillDone(destination, tuple(seqs[i : i + max_seqs])) for i in range(0, len(seqs), max_seqs)]
