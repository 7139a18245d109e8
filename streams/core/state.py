"""What cs-relay remembers about users and groups: the records `UserState` and
`GroupState`, plain and versioned, and their JSON dicts (`to_dict` / `from_dict`) that
the Faust tables in `streams.runtime.app` store; nothing in this module knows about
Faust.

What a destination remembers on its own lives in the record's slot for that destination
(`slots[key]`: streams.core.memory). How a call changes a record:
streams.core.reducers; record versions and reading older ones: streams.core.versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.traits import latest_ids
from streams.core.versions import USER_VERSION, check_version, read_slots

GroupLookup = Callable[[str], "GroupState | None"]
Slots = Mapping[str, Mapping[str, Any]]


def trait_text(value: Any) -> str | None:
    """A non-empty identifier as a string (numbers are accepted, as Segment does)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None


@dataclass(frozen=True)
class UserState:
    """One user (keyed by Segment userId, or anonymousId before login)."""

    key: str
    user_id: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    groups: tuple[str, ...] = ()
    slots: Slots = field(default_factory=dict)  # per destination: what it remembers
    first_seen: str | None = None
    last_seen: str | None = None
    anonymous_ids: tuple[str, ...] = ()  # anonymous profiles merged into this one
    merged_into: str | None = None  # set on an anonymous profile after login: forward to that user
    # On an anonymous profile being merged: the merge-profile it handed over (its body),
    # kept until the user says it folded it in (merge-done), so a hand-over lost in a
    # crash is sent again rather than lost (streams.runtime.merge).
    handing: Mapping[str, Any] | None = None
    # On a user: anonymous id -> the by-user offset of the merge-profile that folded it
    # in; a hand-over sent again is not folded in twice (the last ADOPTED_KEPT kept).
    adopted: Mapping[str, int] = field(default_factory=dict)
    # The user's current group as this user's last group call made it. A group is
    # written by one partition only, its own (streams.runtime.groups), and reaches the
    # global copy a moment later: until then the user's own calls read it from here.
    group_copy: GroupState | None = None
    # The anonymous profile this user asked for at login and has not received yet, and
    # since when (unix seconds): until it comes, the user's later events wait behind the
    # visitor's (streams.core.step, MERGE_WAIT).
    merging: str | None = None
    merging_since: float | None = None
    # Per destination denied a call by consent: what it saw before (streams.core.consent).
    withheld: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def first_name(self) -> str | None:
        return trait_text(self.traits.get("firstName") or self.traits.get("first_name"))

    @property
    def last_name(self) -> str | None:
        return trait_text(self.traits.get("lastName") or self.traits.get("last_name"))

    @property
    def email(self) -> str | None:
        return trait_text(self.traits.get("email"))

    @property
    def display_name(self) -> str | None:
        """First and last name when known, else the `name` trait."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        if parts:
            return " ".join(parts)
        return trait_text(self.traits.get("name"))

    def slot(self, destination: str) -> Mapping[str, Any]:
        return self.slots.get(destination) or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": USER_VERSION,
            "key": self.key,
            "user_id": self.user_id,
            "traits": dict(self.traits),
            "group_id": self.group_id,
            "groups": list(self.groups),
            "slots": {k: dict(v) for k, v in self.slots.items()},
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "anonymous_ids": list(self.anonymous_ids),
            "merged_into": self.merged_into,
            # absent when empty: the record stays what older versions wrote and read
            **({"handing": dict(self.handing)} if self.handing is not None else {}),
            **({"adopted": dict(self.adopted)} if self.adopted else {}),
            **({"group_copy": self.group_copy.to_dict()} if self.group_copy is not None else {}),
            **({"merging": self.merging, "merging_since": self.merging_since} if self.merging else {}),
            **({"withheld": {k: dict(v) for k, v in self.withheld.items()}} if self.withheld else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserState:
        version = check_version(data, "user", USER_VERSION)
        return cls(
            key=data["key"],
            user_id=data.get("user_id"),
            traits=dict(data.get("traits") or {}),
            group_id=data.get("group_id"),
            groups=latest_ids(tuple(data.get("groups") or ())),  # a row of an older version: trimmed
            slots=read_slots(data, version),
            first_seen=data.get("first_seen"),
            last_seen=data.get("last_seen"),
            anonymous_ids=latest_ids(tuple(data.get("anonymous_ids") or ())),
            merged_into=data.get("merged_into"),
            handing=data.get("handing"),
            adopted={k: int(v) for k, v in (data.get("adopted") or {}).items()},
            group_copy=GroupState.from_dict(data["group_copy"]) if data.get("group_copy") else None,
            merging=data.get("merging"),
            merging_since=data.get("merging_since"),
            withheld=dict(data.get("withheld") or {}),
        )


@dataclass(frozen=True)
class GroupState:
    """One Segment group (a ClientSuccess organization, a CustomerSuccessBox account)."""

    group_id: str
    name: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    slots: Slots = field(default_factory=dict)  # per destination: what it remembers
    updated_at: str | None = None
    # Per destination denied a group call by consent: what it saw before (streams.core.consent).
    withheld: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def slot(self, destination: str) -> Mapping[str, Any]:
        return self.slots.get(destination) or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": USER_VERSION,
            "group_id": self.group_id,
            "name": self.name,
            "traits": dict(self.traits),
            "slots": {k: dict(v) for k, v in self.slots.items()},
            "updated_at": self.updated_at,
            **({"withheld": {k: dict(v) for k, v in self.withheld.items()}} if self.withheld else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupState:
        version = check_version(data, "group", USER_VERSION)
        return cls(
            group_id=data["group_id"],
            name=data.get("name"),
            traits=dict(data.get("traits") or {}),
            slots=read_slots(data, version),
            updated_at=data.get("updated_at"),
            withheld=dict(data.get("withheld") or {}),
        )
