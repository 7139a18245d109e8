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

Each routed messageId (and each replayed dead letter's identity) is a row of its own in
the `seen` table (`row_key`: the user, the kind and the id; the value its by-user offset
and time), so checking and remembering one costs the same however many the user has
routed: one small read and one small write. (Earlier, a user's ids were one record
keyed by the user, rewritten whole by every call, up to 640 KB at the cap of
`max_ids`: its cost grew with the user's history. Such records, `Seen`, are still
read, and pruned by the sweep, until the window has passed over them.) The hourly
sweep deletes rows older than the window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streams.core.versions import STATE_VERSION, check_version


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


# ------------------------------------------------------------------ one row per id

ROW_PREFIX = "\x00"  # row keys start with it; a user's record of older versions is keyed by the user
# `json.dumps(..., separators=(",", ":"))` without building an encoder per key (one per event).
_KEY_JSON = json.JSONEncoder(separators=(",", ":"))


def row_key(user: str, ident: str, *, replay: bool = False) -> str:
    """The `seen` row of messageId `ident` routed to `user` (or, `replay`, of the dead
    letter with identity `ident` replayed to it)."""
    return ROW_PREFIX + _KEY_JSON.encode([user, "r" if replay else "m", ident])


def is_row_key(key: str) -> bool:
    return key.startswith(ROW_PREFIX)


def user_of(key: str) -> str:
    """The user a `seen` key belongs to (a row of one id, or an older version's record)."""
    return str(json.loads(key[len(ROW_PREFIX) :])[0]) if is_row_key(key) else key


def row(offset: int, now: float) -> list[float | int]:
    return [offset, now]


def classify_row(value: Any, offset: int, now: float, window: float) -> Verdict:
    """How a record at `offset` relates to the id's row, or to an older version's entry
    for it (None: never seen)."""
    known = (int(value[0]), float(value[1])) if value else None
    return _classify(known, offset, now, window)


def legacy_entry(seen: Seen, ident: str, *, replay: bool = False) -> tuple[int, float] | None:
    """The id in a user's record written by an older version, if there."""
    return (seen.replays if replay else seen.ids).get(ident)


def row_expired(value: Any, now: float, window: float) -> bool:
    return now - float(value[1]) > window
