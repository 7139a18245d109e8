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

A replayed dead letter (`cs-relay dlq replay`) is routed although its messageId was
seen: it was dead-lettered, not delivered. It carries the dead letter's identity (its
topic, partition and offset in the dead-letter topic: `replay_of`), remembered in
`replays` like a messageId, so the same dead letter replayed again, another record with
that identity, is a duplicate: replaying twice delivers once. A replay without an
identity (the header of an older version) is never a duplicate.

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
    """One user's recently routed messageIds: id -> (by-user offset, unix seconds); and
    the dead letters replayed to them, by identity, the same way."""

    ids: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    replays: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.ids and not self.replays

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": STATE_VERSION, "ids": {k: [o, t] for k, (o, t) in self.ids.items()}}
        if self.replays:  # absent otherwise: the record stays what older versions wrote and read
            out["replays"] = {k: [o, t] for k, (o, t) in self.replays.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Seen:
        if not data:
            return cls()
        check_version(data, "dedupe")
        return cls(_entries(data.get("ids")), _entries(data.get("replays")))


def _entries(raw: Mapping[str, Any] | None) -> dict[str, tuple[int, float]]:
    return {k: (int(v[0]), float(v[1])) for k, v in (raw or {}).items()}


def check(
    seen: Seen,
    message_id: str,
    offset: int,
    now: float,
    *,
    window: float,
    max_ids: int,
    replay: bool = False,
    replay_of: str | None = None,
) -> tuple[Verdict, Seen]:
    """Classify a record and return the user's record with it remembered (and pruned).
    A replayed dead letter (`replay_of`: its identity) is classified by that identity
    instead of its messageId; a `replay` without one is never a duplicate."""
    if replay_of is not None:
        verdict = _classify(seen.replays.get(replay_of), offset, now, window)
        if verdict is Verdict.DUPLICATE:
            return verdict, seen
        replays = {**seen.replays, replay_of: (offset, now)}
        return verdict, prune(Seen(seen.ids, replays), now, window=window, max_ids=max_ids)
    verdict = _classify(seen.ids.get(message_id), offset, now, window)
    if verdict is Verdict.DUPLICATE and not replay:
        return verdict, seen
    if verdict is Verdict.DUPLICATE:
        verdict = Verdict.REDELIVERED
    ids = {**seen.ids, message_id: (offset, now)}
    return verdict, prune(Seen(ids, seen.replays), now, window=window, max_ids=max_ids)


def _classify(known: tuple[int, float] | None, offset: int, now: float, window: float) -> Verdict:
    if known is None or now - known[1] > window:
        return Verdict.NEW
    return Verdict.REDELIVERED if known[0] == offset else Verdict.DUPLICATE


def prune(seen: Seen, now: float, *, window: float, max_ids: int) -> Seen:
    """Forget ids and replays older than the window, and the oldest beyond `max_ids`
    (each)."""
    ids, replays = _live(seen.ids, now, window, max_ids), _live(seen.replays, now, window, max_ids)
    if len(ids) == len(seen.ids) and len(replays) == len(seen.replays):
        return seen
    return Seen(ids, replays)


Entries = Mapping[str, tuple[int, float]]


def _live(entries: Entries, now: float, window: float, limit: int) -> dict[str, tuple[int, float]]:
    live = [(k, v) for k, v in entries.items() if now - v[1] <= window]
    if len(live) > limit:
        live.sort(key=lambda kv: kv[1][1])
        live = live[len(live) - limit :]
    return dict(live)
