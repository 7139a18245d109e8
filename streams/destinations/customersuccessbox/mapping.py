"""How a Segment message becomes a CustomerSuccessBox request.

Rules (../shared/partner-contracts.md section 3 and the CustomerSuccessBox page):

- identify -> `POST /api_js/v1_1/identify`, group -> `/account`, track -> `/track`,
  page -> `/page`, camelCase bodies as the vendor's SDK sends them.
- Account id: the call's own `traits.account_id` / `properties.account_id`; else the
  account of the group named in `context.groupId`; else the user's remembered account;
  else the account of the user's current group. A group's account is its
  `traits.account_id` when given, otherwise its Segment `groupId` (our choice: in
  Segment the group is the account).
- User id: the call's `traits.user_id` / `properties.user_id`; else the remembered
  CustomerSuccessBox user id; else the Segment userId.
- A call whose account (or user) is still unknown is held until an identify or group
  call makes it known.
- `productId` / `moduleId` come from `properties.product_id` / `module_id`, cut to
  64 characters as CustomerSuccessBox does.
- screen and alias are not taken.
"""

from __future__ import annotations

from typing import Any, Mapping

from streams.core.decision import Decision, Hold, PartnerRequest, Send, Skip
from streams.core.segment import Message
from streams.core.state import GroupLookup, UserState, _text
from streams.destinations.customersuccessbox import memory
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings

NAME = "CustomerSuccessBox"
KEY = "customersuccessbox"
API = "/api_js/v1_1"
FEATURE_ID_MAX = 64


def group_account(group_id: str, groups: GroupLookup) -> str:
    """The CustomerSuccessBox account of a Segment group."""
    group = groups(group_id)
    return (memory.group_account(group) if group else None) or group_id


def account_id(msg: Message, own: Mapping[str, Any], user: UserState, groups: GroupLookup) -> str | None:
    """The account a call is attributed to, or None while it is unknown."""
    return (
        _text(own.get("account_id"))
        or (group_account(msg.context_group_id, groups) if msg.context_group_id else None)
        or memory.user_account(user)
        or (group_account(user.group_id, groups) if user.group_id else None)
    )


def user_id(msg: Message, own: Mapping[str, Any], user: UserState) -> str | None:
    return _text(own.get("user_id")) or memory.user_id(user) or msg.user_id or user.user_id


def _feature_id(value: Any) -> str | None:
    text = _text(value)
    return text[:FEATURE_ID_MAX] if text else None


def decide(settings: CustomerSuccessBoxSettings, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """What CustomerSuccessBox gets for `msg`, given the state after `msg`."""
    if msg.type == "group":
        body: dict[str, Any] = {
            "type": "account",
            "accountId": group_account(msg.group_id, groups),
            "traits": dict(msg.traits),
        }
        return Send(_request("account", body, msg))
    if msg.type not in ("identify", "track", "page"):
        return Skip(f"CustomerSuccessBox does not take {msg.type} calls")
    own = msg.traits if msg.type == "identify" else msg.properties
    account = account_id(msg, own, user, groups)
    if not account:
        return Hold("no CustomerSuccessBox account is known for this user yet")
    uid = user_id(msg, own, user)
    if not uid:
        return Hold("no CustomerSuccessBox user id is known for this user yet")
    body = {"type": msg.type, "accountId": account, "userId": uid}
    if msg.type == "identify":
        body["traits"] = dict(msg.traits)
    elif msg.type == "track":
        body["event"] = msg.event
        body["properties"] = dict(msg.properties)
        for source, target in (("product_id", "productId"), ("module_id", "moduleId")):
            feature = _feature_id(msg.properties.get(source))
            if feature:
                body[target] = feature
    else:
        body["name"] = msg.name or msg.properties.get("title") or ""
        body["properties"] = dict(msg.properties)
    return Send(_request(msg.type, body, msg))


def _request(endpoint: str, body: dict[str, Any], msg: Message) -> PartnerRequest:
    if msg.timestamp:
        body["timestamp"] = msg.timestamp
    return PartnerRequest("POST", f"{API}/{endpoint}", body)
