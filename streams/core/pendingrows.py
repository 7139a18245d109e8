"""A user's pending record as it is stored: a small index row, and a row per waiting event.

A waiting event (held, releasing or parked; `streams.core.pending`) carries the
original message (up to 32 KB) and, once parked, the partner request to send again.
Kept inside the user's one record, every hold or park rewrote all of them: during a
partner outage each new event of a user rewrote the user's whole backlog (a 2-minute
CustomerSuccessBox outage at 200 events/s over 300 users: about 80 parked deliveries of
about 1 KB per user, so 40 KB encoded and written to the changelog per event on
average), and a heavy user's record could pass the broker's 1 MB record limit. Stored
instead:

* the index row (the `pending` table, keyed by user): per destination the numbers of
  its held, releasing and parked events and the little the step needs of them (when
  an event was held; a parked delivery's first failure, attempts and next try): tens
  of bytes per event, below `INDEX_MAX_BYTES` in all: at most `max_events` held, as
  many releasing and as many parked for each registered destination
  (`worst_index_bytes`); start-up refuses a CS_RELAY_PENDING_MAX_EVENTS whose worst
  row would not fit with the registry's destinations (`max_events_within`);
* a payload row per event (the `payloads` table, keyed by `payload_key(user,
  destination, seq)`): its original text and source, and a parked delivery's request,
  messageId and last error (which changes at each retry of it: a small row rewritten,
  not the index).

`changes(before, after)` says which payload rows a write adds and which it removes; an
event keeps its row from held to parked (the row is rewritten then, with the request).
`read(index, payload)` joins them back into the `Pending` the step works on. An event
whose payload row is missing (a crash between the two writes; the event's offset was
not committed, so its record is processed again and writes both) is left out of the
result and reported, rather than sent with an empty body.

Records of version 1 (the whole record in one row, as older workers wrote it) are read
as before; the next write of the user splits them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streams.core.pending import Item, Parked, Pending, Queue
from streams.core.versions import check_version

INDEX_VERSION = 2
INDEX_MAX_BYTES = 900 * 1024  # below the 1 MiB max.message.bytes of the changelog topics
MAX_EVENTS_BOUND = 2000  # the largest CS_RELAY_PENDING_MAX_EVENTS, whatever the registry
# The longest values an index entry can hold: a number is a position times 2**20, below
# 2**63 (streams.core.positions); times are unix seconds with 3 decimals before 2286;
# attempts of one parked delivery stay far below 10**9 within any retry window.
_LONGEST_SEQ = (1 << 63) - 1
_LONGEST_TIME = 9_999_999_999.999
_MOST_ATTEMPTS = 10**9 - 1
ERROR_CHARS = 500  # of a parked delivery's last error kept in its payload row

Entry = Item | Parked
Slot = tuple[str, int]  # (destination, seq)


def payload_key(user: str, destination: str, seq: int) -> str:
    return json.dumps([user, destination, seq], separators=(",", ":"))


def index_row(pending: Pending) -> dict[str, Any]:
    """What the `pending` table keeps of `pending` (no event bodies)."""
    return {
        "v": INDEX_VERSION,
        "next_seq": pending.next_seq,
        "queues": {
            dest: {
                "held": [[i.seq, round(i.held_at, 3)] for i in q.held],
                "releasing": [[i.seq, round(i.held_at, 3)] for i in q.releasing],
                "parked": [[p.seq, round(p.first_failed_at, 3), p.attempts, round(p.next_at, 3)] for p in q.parked],
            }
            for dest, q in pending.queues.items()
        },
    }


def worst_index_bytes(destinations: Iterable[str], max_events: int) -> int:
    """The largest index row (JSON bytes, as the table stores it) a user can have with
    these destinations at CS_RELAY_PENDING_MAX_EVENTS `max_events`: each with as many
    held, releasing and parked events as it allows, every number and time at its
    longest."""
    item = Item(_LONGEST_SEQ, _LONGEST_TIME, "")
    park = Parked(_LONGEST_SEQ, "", {}, {}, "", _LONGEST_TIME, _MOST_ATTEMPTS, _LONGEST_TIME)
    queue = Queue((item,) * max_events, (item,) * max_events, (park,) * max_events)
    row = index_row(Pending(_LONGEST_SEQ, {key: queue for key in destinations}))
    return len(json.dumps(row, separators=(",", ":")))


def max_events_within(destinations: Iterable[str], max_bytes: int = INDEX_MAX_BYTES) -> int:
    """The largest CS_RELAY_PENDING_MAX_EVENTS (at most MAX_EVENTS_BOUND) whose worst
    index row with these destinations fits in `max_bytes`; 0 when none does."""
    keys = list(destinations)
    one, two = worst_index_bytes(keys, 1), worst_index_bytes(keys, 2)
    per_event = two - one  # from the second event on, every one adds the same bytes
    return max(0, min(MAX_EVENTS_BOUND, (max_bytes - one) // per_event + 1)) if one <= max_bytes else 0


def payload_row(entry: Entry) -> dict[str, Any]:
    row: dict[str, Any] = {"raw": entry.raw, "source": dict(entry.source)}
    if isinstance(entry, Parked):
        row["request"] = dict(entry.request)
        row["message_id"] = entry.message_id
        row["last_error"] = entry.last_error[:ERROR_CHARS]
    return row


def index_only(data: Mapping[str, Any] | None) -> Pending:
    """The index row as a `Pending` without bodies (empty `raw`, `request`): enough to
    count, to find retry times and ages, and to decide whether anything expires.
    Version 1 rows are read whole."""
    return read(data, lambda dest, seq: {})[0]


def read(
    data: Mapping[str, Any] | None, payload: Callable[[str, int], Mapping[str, Any] | None]
) -> tuple[Pending, list[Slot]]:
    """The user's `Pending` from its index row and `payload(destination, seq)` (the
    payload row, or None when missing); with the slots left out for want of a row."""
    if not data:
        return Pending(), []
    if check_version(data, "pending", INDEX_VERSION) < INDEX_VERSION:
        return Pending.from_dict(data), []
    missing: list[Slot] = []
    queues = {}
    for dest, q in (data.get("queues") or {}).items():

        def body(seq: int, dest: str = dest) -> Mapping[str, Any] | None:
            row = payload(dest, seq)
            if row is None:
                missing.append((dest, seq))
            return row

        held = _items(q.get("held") or (), body)
        releasing = _items(q.get("releasing") or (), body)
        parked = tuple(
            Parked(
                seq,
                row.get("raw", ""),
                row.get("source") or {},
                row.get("request") or {},
                row.get("message_id", ""),
                first_failed_at,
                attempts,
                next_at,
                row.get("last_error", ""),
            )
            for seq, first_failed_at, attempts, next_at in q.get("parked") or ()
            if (row := body(seq)) is not None
        )
        queues[dest] = Queue(held, releasing, parked)
    pending = Pending(next_seq=data.get("next_seq", 1), queues={d: q for d, q in queues.items() if q})
    return pending, missing


def _items(entries: Iterable[list[Any]], body: Callable[[int], Mapping[str, Any] | None]) -> tuple[Item, ...]:
    return tuple(
        Item(seq, held_at, row.get("raw", ""), row.get("source") or {})
        for seq, held_at in entries
        if (row := body(seq)) is not None
    )


def entries(pending: Pending) -> dict[Slot, Entry]:
    out: dict[Slot, Entry] = {}
    for dest, q in pending.queues.items():
        waiting: tuple[Entry, ...] = (*q.held, *q.releasing, *q.parked)
        out.update(((dest, e.seq), e) for e in waiting)
    return out


def changes(before: Pending, after: Pending) -> tuple[dict[Slot, dict[str, Any]], list[Slot]]:
    """The payload rows to write (new events, and events whose body changed: a released
    one that parked) and the slots whose rows to delete (events gone)."""
    old, new = entries(before), entries(after)
    put = {slot: payload_row(e) for slot, e in new.items() if not _same_body(old.get(slot), e)}
    gone = [slot for slot in old if slot not in new]
    return put, gone


def _same_body(old: Entry | None, new: Entry) -> bool:
    # The same object (the step keeps what it does not change) needs no row built.
    return old is new or (old is not None and payload_row(old) == payload_row(new))


def fit(pending: Pending, max_bytes: int) -> tuple[Pending, list[tuple[str, Entry]]]:
    """`pending` whole (`to_dict`, as a merge hand-over carries it) in at most
    `max_bytes` of JSON: its newest events are taken out until the rest fits, and
    returned (destination, event) for the dead-letter topic. The oldest stay, so what
    is handed over keeps its order; what was taken out is replayed after it."""
    waiting = entries(pending)
    sizes = {slot: len(json.dumps(e.to_dict(), separators=(",", ":"))) + 1 for slot, e in waiting.items()}
    empty = Pending(pending.next_seq, {d: Queue() for d in pending.queues})  # the record around its events
    total = len(json.dumps(empty.to_dict())) + sum(sizes.values())
    age = _ages(pending)
    out: list[Slot] = []
    for slot in sorted(sizes, key=lambda s: (age[s], s[1]), reverse=True):  # newest first
        if total <= max_bytes:
            break
        out.append(slot)
        total -= sizes[slot]
    if not out:
        return pending, []
    taken = [(dest, waiting[(dest, seq)]) for dest, seq in sorted(out, key=lambda s: (age[s], s[1]))]
    return without(pending, out), taken


def _ages(pending: Pending) -> dict[Slot, int]:
    """Each waiting event's place in its destination's queue, oldest first (parked,
    releasing, held): its age, before its number, which is not in age order (a
    visitor's adopted events; input and by-user positions, streams.core.positions)."""
    out: dict[Slot, int] = {}
    for dest, q in pending.queues.items():
        waiting: tuple[Entry, ...] = (*q.parked, *q.releasing, *q.held)
        out.update(((dest, e.seq), i) for i, e in enumerate(waiting))
    return out


def without(pending: Pending, slots: Iterable[Slot]) -> Pending:
    """`pending` less the events at `slots` (gone elsewhere: the dead-letter topic)."""
    out = set(slots)
    if not out:
        return pending
    for dest, queue in pending.queues.items():
        pending = pending.with_queue(
            dest,
            Queue(
                tuple(i for i in queue.held if (dest, i.seq) not in out),
                tuple(i for i in queue.releasing if (dest, i.seq) not in out),
                tuple(p for p in queue.parked if (dest, p.seq) not in out),
            ),
        )
    return pending
