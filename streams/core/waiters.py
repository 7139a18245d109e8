"""Users waiting for a group to become known (or to gain what their events need: a
name for ClientSuccess, an account for CustomerSuccessBox), kept in the group's own
partition (the `waiters` table, keyed by groupId; streams.runtime.groups).

A user whose events a destination holds while their group is not (fully) known asks to
wait, with the `updated_at` of the group record it saw. When the group's partition
applies the next update of the group, it tells every waiting user (a `group-known`
record with the group), and the user releases what the group now attributes, whoever's
call made it known. A user who saw an older record than the partition has is told at
once. The row is bounded: at most `limit` users and `max_bytes` of JSON (a user key is
at most 256 bytes: streams.core.idlimits); beyond either a user waits for their own
next call, as every user did before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.traits import stored_size

VERSION = 1
WAITERS_MAX = 2000  # users per group row
WAITERS_MAX_BYTES = 128 * 1024  # the row as JSON


@dataclass(frozen=True)
class Waiters:
    """One group's waiting users: user key -> the `updated_at` of the record they saw."""

    users: Mapping[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"v": VERSION, "users": dict(self.users)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Waiters:
        if not data:
            return cls()
        return cls(dict(data.get("users") or {}))


def tell_now(current_updated_at: str | None, seen: str | None) -> bool:
    """Whether a user who saw the record of `seen` (None: no record) should be told at
    once: the partition's record is newer than what the user saw."""
    return current_updated_at is not None and (seen is None or current_updated_at > seen)


def add(
    waiters: Waiters, user: str, seen: str | None, limit: int = WAITERS_MAX, max_bytes: int = WAITERS_MAX_BYTES
) -> tuple[Waiters, bool]:
    """The row with `user` waiting; False (the row unchanged) when it is full: `limit`
    users, or more than `max_bytes` of JSON with this one."""
    if user in waiters.users:
        if waiters.users[user] == seen:
            return waiters, True
        after = Waiters({**waiters.users, user: seen})  # `seen` is a time: as long as before, or None
        return (after, True) if size(after) <= max_bytes else (waiters, False)
    if len(waiters.users) >= limit:
        return waiters, False
    after = Waiters({**waiters.users, user: seen})
    return (after, True) if size(after) <= max_bytes else (waiters, False)


def size(waiters: Waiters) -> int:
    """The row's size as the table stores it (JSON, UTF-8)."""
    return stored_size(waiters.to_dict())
