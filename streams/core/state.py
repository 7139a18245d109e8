"""What cs-relay remembers about users and groups, and how each message changes it.

Plain, versioned records and pure reducers: `apply_to_user` and `apply_to_group` take a
record and a Segment message and return the new record. The Faust tables in
`streams.runtime.app` store these records as JSON dicts (`to_dict` / `from_dict`); nothing in
this module knows about Faust.

What a destination remembers on its own (CustomerSuccessBox's account and user ids, say)
lives in the record's slot for that destination (`slots[key]`, a plain JSON object),
written by that destination's `Memory`: this module knows no partner.

Record versions: every stored dict carries `"v"`. `from_dict` reads every version it
knows, so a newer worker can read what an older one wrote. Users and groups are at
version 2 (destination slots); version 1 kept CustomerSuccessBox's ids in top-level
fields, which `from_dict` moves into that destination's slot (`V1_SLOT_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from streams.core import consent
from streams.core.message import Message
from streams.core.traits import ADOPTED_KEPT, SLOT_MAX_BYTES, latest_entries, latest_ids, merge_traits, stored_size

STATE_VERSION = 1  # pending and dedupe records
USER_VERSION = 2  # users and groups: 2 moved destination ids into slots
GroupLookup = Callable[[str], "GroupState | None"]
Slots = Mapping[str, Mapping[str, Any]]

# Version 1 of the user and group records (frozen: it is what older workers wrote) kept
# CustomerSuccessBox's ids as top-level fields. Reading one, they move into the slot of
# the destination that owns them: field -> (destination key, slot field).
V1_SLOT_FIELDS: Mapping[str, tuple[str, str]] = {
    "csb_account_id": ("customersuccessbox", "account_id"),
    "csb_user_id": ("customersuccessbox", "user_id"),
}


def check_version(data: Mapping[str, Any], what: str, current: int = STATE_VERSION) -> int:
    """The record's version; a record written by a newer worker is refused rather than
    misread (rolling upgrades go forward)."""
    version = data.get("v", 1)
    if version > current:
        raise ValueError(f"{what} record version {version} is newer than this worker ({current})")
    return version


def _read_slots(data: Mapping[str, Any], version: int) -> dict[str, dict[str, Any]]:
    slots = {key: dict(slot) for key, slot in (data.get("slots") or {}).items()}
    if version < 2:
        for old, (dest, name) in V1_SLOT_FIELDS.items():
            if data.get(old) is not None:
                slots.setdefault(dest, {})[name] = data[old]
    return slots


@dataclass(frozen=True)
class Memory:
    """What one destination remembers of users and groups, in its own slot of their
    records: pure functions from (slot, message) to the new slot."""

    key: str
    user: Callable[[Mapping[str, Any], Message], Mapping[str, Any]]
    group: Callable[[Mapping[str, Any], Message], Mapping[str, Any]] | None = None


def _remembered(slots: Slots, msg: Message, memories: Iterable[Memory], group: bool = False) -> Slots | None:
    """`slots` after each memory saw `msg`, or None when nothing changed. A slot that
    would pass SLOT_MAX_BYTES keeps what it had (an id of a partner is a few bytes; a
    megabyte of them would stop the worker: the changelog refuses the row)."""
    changed = False
    out = dict(slots)
    for memory in memories:
        update = memory.group if group else memory.user
        if update is None:
            continue
        before = slots.get(memory.key) or {}
        after = update(before, msg)
        if dict(after) != dict(before) and stored_size(dict(after)) <= SLOT_MAX_BYTES:
            out[memory.key] = dict(after)
            changed = True
    return out if changed else None


K = TypeVar("K")
R = TypeVar("R")


class Readable(Generic[R]):
    """Reads a table's values with `read` (a `from_dict`), leaving out, and counting in
    `skipped`, those it refuses: during a rolling upgrade an older worker meets records
    a newer one wrote, and one such record must not stop a scan over every user."""

    def __init__(self, read: Callable[[Any], R], errors: tuple[type[Exception], ...] = (ValueError,)) -> None:
        self.read = read
        self.errors = errors
        self.skipped = 0

    def each(self, items: Iterable[tuple[K, Any]]) -> Iterator[tuple[K, R]]:
        for key, data in items:
            try:
                record = self.read(data)
            except self.errors:
                self.skipped += 1
                continue
            yield key, record


def _text(value: Any) -> str | None:
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
        return _text(self.traits.get("firstName") or self.traits.get("first_name"))

    @property
    def last_name(self) -> str | None:
        return _text(self.traits.get("lastName") or self.traits.get("last_name"))

    @property
    def email(self) -> str | None:
        return _text(self.traits.get("email"))

    @property
    def display_name(self) -> str | None:
        """First and last name when known, else the `name` trait."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        if parts:
            return " ".join(parts)
        return _text(self.traits.get("name"))

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
            slots=_read_slots(data, version),
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
            slots=_read_slots(data, version),
            updated_at=data.get("updated_at"),
            withheld=dict(data.get("withheld") or {}),
        )


LAST_SEEN_STEP = 60.0  # seconds: `last_seen` moves on at most this often


def _moved_on(last_seen: str | None, now: str) -> bool:
    """Whether `last_seen` should become `now`: a minute or more later (a user's record
    is then written only when something else changed, or once a minute, not by every
    call: the record is rewritten, and sent to the changelog, whenever it changes)."""
    if last_seen is None:
        return True
    try:
        return (datetime.fromisoformat(now) - datetime.fromisoformat(last_seen)).total_seconds() >= LAST_SEEN_STEP
    except ValueError:
        return True


def apply_to_user(
    user: UserState | None,
    msg: Message,
    now: str,
    key: str | None = None,
    memories: Iterable[Memory] = (),
    denied: frozenset[str] = frozenset(),
    watching: frozenset[str] = frozenset(),
) -> UserState:
    """The user's record after `msg`: traits merged (latest wins), group learned, and
    each destination's slot updated by its `Memory`. `denied`: the destinations consent
    keeps the call from (of those that name categories, `watching`): their slots do not
    learn from it, and what they saw before is kept for them (streams.core.consent)."""
    user = user or UserState(key=key or msg.key, first_seen=now)
    changes: dict[str, Any] = {"last_seen": now} if _moved_on(user.last_seen, now) else {}
    if user.first_seen is None:
        changes["first_seen"] = now
    if msg.user_id and user.user_id != msg.user_id:
        changes["user_id"] = msg.user_id
    if msg.type == "identify":
        traits = msg.traits
        if traits:
            changes["traits"] = merge_traits(user.traits, traits)
    elif msg.type == "group":
        group_id = msg.group_id
        changes["group_id"] = group_id
        if group_id is not None and group_id not in user.groups:
            changes["groups"] = latest_ids((*user.groups, group_id))
    slots = _remembered(user.slots, msg, [m for m in memories if m.key not in denied])
    if slots is not None:
        changes["slots"] = slots
    if watching:
        traits_after = changes.get("traits", user.traits)
        group_after = changes.get("group_id", user.group_id)
        withheld = consent.after_call(
            user.withheld,
            user.traits,
            traits_after,
            denied,
            watching,
            group=(user.group_id, group_after),
            brought=msg.traits if msg.type == "identify" else (),
        )
        if withheld != user.withheld:
            changes["withheld"] = withheld
    return replace(user, **changes)


def apply_to_group(
    group: GroupState | None,
    msg: Message,
    now: str,
    memories: Iterable[Memory] = (),
    denied: frozenset[str] = frozenset(),
    watching: frozenset[str] = frozenset(),
) -> GroupState:
    """The group's record after a group call: name and traits updated, and each
    destination's slot updated by its `Memory`; `denied` and `watching` as for
    `apply_to_user`."""
    if group is None:
        assert msg.group_id is not None, "a group call has a groupId (segment.validate requires it)"
        group = GroupState(group_id=msg.group_id)
    traits = merge_traits(group.traits, msg.traits)
    slots = _remembered(group.slots, msg, [m for m in memories if m.key not in denied], group=True)
    withheld = (
        consent.after_call(group.withheld, group.traits, traits, denied, watching, brought=msg.traits)
        if watching
        else group.withheld
    )
    return replace(
        group,
        name=_text(msg.traits.get("name")) or group.name,
        traits=traits,
        slots=group.slots if slots is None else slots,
        updated_at=now,
        withheld=withheld,
    )


def anonymous_to_merge(msg: Message, user: UserState) -> str | None:
    """The anonymous profile that `msg` links to this user and that is not merged yet:
    an alias call's `previousId`, or an identify carrying both ids."""
    if msg.type == "alias":
        anonymous = msg.previous_id
    elif msg.type == "identify" and msg.user_id and msg.anonymous_id:
        anonymous = msg.anonymous_id
    else:
        return None
    if not anonymous or anonymous == user.key:
        return None
    if anonymous in user.anonymous_ids and anonymous != user.merging:
        return None
    # Not asked yet, or asked and still awaited: ask (again). The same call processed
    # again after a crash finds the id recorded while the request may never have reached
    # Kafka; asking twice is harmless (the visitor's partition hands over once).
    return anonymous


def newer(a: GroupState | None, b: GroupState | None) -> GroupState | None:
    """The later written of two records of a group (`updated_at`, ISO 8601 in UTC)."""
    if a is None or b is None:
        return a or b
    return b if (b.updated_at or "") > (a.updated_at or "") else a


def with_copy(groups: GroupLookup, user: UserState | None) -> GroupLookup:
    """`groups` as `user` sees them: its own copy of its group where that is newer than
    the global one (the global copy is written by the group's partition, a moment after
    the user's group call)."""
    copy = user.group_copy if user is not None else None
    return groups if copy is None else overlay_newer(groups, copy)


def overlay_newer(groups: GroupLookup, group: GroupState) -> GroupLookup:
    """`groups`, with `group` where it is newer than the record found."""

    def lookup(group_id: str) -> GroupState | None:
        found = groups(group_id)
        return newer(found, group) if group_id == group.group_id else found

    return lookup


def merge_users(
    user: UserState, anonymous: UserState | None, anonymous_id: str, offset: int | None = None
) -> UserState:
    """The user's record with an anonymous profile folded in. What the identified user
    already has wins (it is newer); the anonymous profile fills the gaps. `offset`: the
    by-user offset of the merge-profile record, remembered in `adopted`."""
    ids = user.anonymous_ids if anonymous_id in user.anonymous_ids else latest_ids((*user.anonymous_ids, anonymous_id))
    adopted = dict(user.adopted)
    if offset is not None:
        adopted.pop(anonymous_id, None)
        adopted[anonymous_id] = offset
        adopted = latest_entries(adopted, ADOPTED_KEPT)
    user = replace(user, adopted=adopted)
    if user.merging == anonymous_id:
        user = replace(user, merging=None, merging_since=None)  # the profile it waited for
    if anonymous is None:
        return replace(user, anonymous_ids=ids)
    groups = latest_ids(tuple(dict.fromkeys((*anonymous.groups, *user.groups))))
    return replace(
        user,
        traits=merge_traits(anonymous.traits, user.traits),
        group_id=user.group_id or anonymous.group_id,
        groups=groups,
        slots=_merge_slots(user.slots, anonymous.slots),
        first_seen=min(filter(None, (user.first_seen, anonymous.first_seen)), default=None),
        anonymous_ids=ids,
        withheld=consent.merge(user.withheld, anonymous.withheld, user.traits, user_has_group=bool(user.group_id)),
    )


def _merge_slots(user: Slots, anonymous: Slots) -> Slots:
    """Each destination's slot: what the user has wins, the anonymous profile fills gaps."""
    out = {}
    for key in {*anonymous, *user}:
        merged = {**(anonymous.get(key) or {}), **(user.get(key) or {})}
        out[key] = merged if stored_size(merged) <= SLOT_MAX_BYTES else dict(user.get(key) or {})
    return out
