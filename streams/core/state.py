"""What cs-relay remembers about users and groups, and how each message changes it.

Plain, versioned records and pure reducers: `apply_to_user` and `apply_to_group` take a
record and a Segment message and return the new record. The Faust tables in
`streams.runtime.app` store these records as JSON dicts (`to_dict` / `from_dict`); nothing in
this module knows about Faust.

Record versions: every stored dict carries `"v"`. `from_dict` reads every version it
knows, so a newer worker can read what an older one wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

from streams.core.segment import Message

STATE_VERSION = 1


def check_version(data: Mapping[str, Any], what: str) -> int:
    """The record's version; a record written by a newer worker is refused rather than
    misread (rolling upgrades go forward)."""
    version = data.get("v", 1)
    if version > STATE_VERSION:
        raise ValueError(f"{what} record version {version} is newer than this worker ({STATE_VERSION})")
    return version


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
    csb_account_id: str | None = None
    csb_user_id: str | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    anonymous_ids: tuple[str, ...] = ()  # anonymous profiles merged into this one
    merged_into: str | None = None  # set on an anonymous profile after login: forward to that user

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "key": self.key,
            "user_id": self.user_id,
            "traits": dict(self.traits),
            "group_id": self.group_id,
            "groups": list(self.groups),
            "csb_account_id": self.csb_account_id,
            "csb_user_id": self.csb_user_id,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "anonymous_ids": list(self.anonymous_ids),
            "merged_into": self.merged_into,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UserState":
        check_version(data, "user")
        return cls(
            key=data["key"],
            user_id=data.get("user_id"),
            traits=dict(data.get("traits") or {}),
            group_id=data.get("group_id"),
            groups=tuple(data.get("groups") or ()),
            csb_account_id=data.get("csb_account_id"),
            csb_user_id=data.get("csb_user_id"),
            first_seen=data.get("first_seen"),
            last_seen=data.get("last_seen"),
            anonymous_ids=tuple(data.get("anonymous_ids") or ()),
            merged_into=data.get("merged_into"),
        )


@dataclass(frozen=True)
class GroupState:
    """One Segment group (a ClientSuccess organization, a CustomerSuccessBox account)."""

    group_id: str
    name: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)
    csb_account_id: str | None = None
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "group_id": self.group_id,
            "name": self.name,
            "traits": dict(self.traits),
            "csb_account_id": self.csb_account_id,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GroupState":
        check_version(data, "group")
        return cls(
            group_id=data["group_id"],
            name=data.get("name"),
            traits=dict(data.get("traits") or {}),
            csb_account_id=data.get("csb_account_id"),
            updated_at=data.get("updated_at"),
        )


def apply_to_user(user: UserState | None, msg: Message, now: str, key: str | None = None) -> UserState:
    """The user's record after `msg`: traits merged (latest wins), group and ids learned."""
    user = user or UserState(key=key or msg.key, first_seen=now)
    changes: dict[str, Any] = {"last_seen": now}
    if user.first_seen is None:
        changes["first_seen"] = now
    if msg.user_id and user.user_id != msg.user_id:
        changes["user_id"] = msg.user_id
    if msg.type == "identify":
        traits = msg.traits
        if traits:
            changes["traits"] = {**user.traits, **traits}
        changes.update(_csb_ids(traits, user))
    elif msg.type == "group":
        group_id = msg.group_id
        changes["group_id"] = group_id
        if group_id not in user.groups:
            changes["groups"] = (*user.groups, group_id)
        account = _text(msg.traits.get("account_id"))
        if account:
            changes["csb_account_id"] = account
    elif msg.type in ("track", "page", "screen"):
        changes.update(_csb_ids(msg.properties, user))
    return replace(user, **changes)


def _csb_ids(fields: Mapping[str, Any], user: UserState) -> dict[str, str]:
    found: dict[str, str] = {}
    account = _text(fields.get("account_id"))
    if account and account != user.csb_account_id:
        found["csb_account_id"] = account
    csb_user = _text(fields.get("user_id"))
    if csb_user and csb_user != user.csb_user_id:
        found["csb_user_id"] = csb_user
    return found


def apply_to_group(group: GroupState | None, msg: Message, now: str) -> GroupState:
    """The group's record after a group call: name and traits updated, account id learned."""
    group = group or GroupState(group_id=msg.group_id)
    traits = {**group.traits, **msg.traits}
    return replace(
        group,
        name=_text(msg.traits.get("name")) or group.name,
        traits=traits,
        csb_account_id=_text(msg.traits.get("account_id")) or group.csb_account_id,
        updated_at=now,
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
    if not anonymous or anonymous == user.key or anonymous in user.anonymous_ids:
        return None
    return anonymous


def merge_users(user: UserState, anonymous: UserState | None, anonymous_id: str) -> UserState:
    """The user's record with an anonymous profile folded in. What the identified user
    already has wins (it is newer); the anonymous profile fills the gaps."""
    ids = user.anonymous_ids if anonymous_id in user.anonymous_ids else (*user.anonymous_ids, anonymous_id)
    if anonymous is None:
        return replace(user, anonymous_ids=ids)
    groups = tuple(dict.fromkeys((*anonymous.groups, *user.groups)))
    return replace(
        user,
        traits={**anonymous.traits, **user.traits},
        group_id=user.group_id or anonymous.group_id,
        groups=groups,
        csb_account_id=user.csb_account_id or anonymous.csb_account_id,
        csb_user_id=user.csb_user_id or anonymous.csb_user_id,
        first_seen=min(filter(None, (user.first_seen, anonymous.first_seen)), default=None),
        anonymous_ids=ids,
    )
