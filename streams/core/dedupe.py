"""Deduplication by `messageId`, per user, over a time window.

Segment clients retry, bridges replay, and `cs-relay dlq replay` sends records back:
the same message can reach the by-user topic more than once. cs-relay remembers, per
user, the messageIds it has routed in the last `window` seconds and the by-user offset
of the record that carried each one.

A record whose messageId is known is one of two things:
* the *same record* again (same offset): Kafka redelivering it after a crash or a
  rebalance, before its offset was committed. Its deliveries may not have happened, so
  it is processed again (at least once, never lost);
* *another record* with the same messageId (another offset): a duplicate, dropped.

Entries older than the window are pruned whenever the user's record is written, and a
periodic sweep prunes users who have gone quiet; `max_ids` caps one user's record so a
flood of unique ids cannot grow it without bound (the oldest are forgotten first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.core.state import STATE_VERSION, check_version


class Verdict(StrEnum):
    NEW = "new"
    REDELIVERED = "redelivered"  # the same record again: process it again
    DUPLICATE = "duplicate"  # another record with a messageId already routed


@dataclass(frozen=True)
class Seen:
    """One user's recently routed messageIds: id -> (by-user offset, unix seconds)."""

    ids: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "ids": {k: [o, t] for k, (o, t) in self.ids.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Seen:
        if not data:
            return cls()
        check_version(data, "dedupe")
        return cls({k: (int(v[0]), float(v[1])) for k, v in (data.get("ids") or {}).items()})


def check(
    seen: Seen, message_id: str, offset: int, now: float, *, window: float, max_ids: int, replay: bool = False
) -> tuple[Verdict, Seen]:
    """Classify a record and return the user's record with it remembered (and pruned).
    A `replay` (a dead letter sent back on purpose) is never a duplicate."""
    known = seen.ids.get(message_id)
    if known is not None and now - known[1] <= window:
        if known[0] != offset and not replay:
            return Verdict.DUPLICATE, seen
        verdict = Verdict.REDELIVERED
    else:
        verdict = Verdict.NEW
    ids = dict(seen.ids)
    ids[message_id] = (offset, now)
    return verdict, prune(Seen(ids), now, window=window, max_ids=max_ids)


def prune(seen: Seen, now: float, *, window: float, max_ids: int) -> Seen:
    """Forget ids older than the window, and the oldest beyond `max_ids`."""
    live = [(k, v) for k, v in seen.ids.items() if now - v[1] <= window]
    if len(live) > max_ids:
        live.sort(key=lambda kv: kv[1][1])
        live = live[len(live) - max_ids :]
    if len(live) == len(seen.ids):
        return seen
    return Seen(dict(live))
