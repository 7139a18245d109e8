"""What CustomerSuccessBox remembers of users and groups, in its slot of their records.

- a user's account: the latest `traits.account_id` of an identify or group call, or
  `properties.account_id` of a track, page or screen call;
- a user's CustomerSuccessBox user id: `traits.user_id` / `properties.user_id`;
- a group's account: its group call's `traits.account_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.memory import Memory
from streams.core.message import Message
from streams.core.state import GroupState, UserState
from streams.core.state import trait_text as _text

KEY = "customersuccessbox"


def _learn(slot: Mapping[str, Any], fields: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    found = {name: _text(fields.get(name)) for name in names}
    found = {name: value for name, value in found.items() if value}
    return {**slot, **found} if found else slot


def remember_user(slot: Mapping[str, Any], msg: Message) -> Mapping[str, Any]:
    if msg.type == "identify":
        return _learn(slot, msg.traits, "account_id", "user_id")
    if msg.type == "group":
        return _learn(slot, msg.traits, "account_id")
    if msg.type in ("track", "page", "screen"):
        return _learn(slot, msg.properties, "account_id", "user_id")
    return slot


def remember_group(slot: Mapping[str, Any], msg: Message) -> Mapping[str, Any]:
    return _learn(slot, msg.traits, "account_id") if msg.type == "group" else slot


MEMORY = Memory(KEY, remember_user, remember_group)


def user_account(user: UserState) -> str | None:
    return user.slot(KEY).get("account_id")


def user_id(user: UserState) -> str | None:
    return user.slot(KEY).get("user_id")


def group_account(group: GroupState) -> str | None:
    return group.slot(KEY).get("account_id")
