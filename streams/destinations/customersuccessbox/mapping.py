"""How a Segment message becomes a CustomerSuccessBox request.

Rules (../shared/partner-contracts.md section 3 and the CustomerSuccessBox page):

- identify -> `POST /api_js/v1_1/identify` (`"type": "user"`, as csb-node `CSB.user` and
  csb-java `CSB.user` send it), group -> `/account`, track -> `/track`, page -> `/page`,
  camelCase bodies as the vendor's SDKs send them.
- A track whose properties carry both `product_id` and `module_id` is product usage
  (seed page): `POST /api_js/v1_1/feature` `{"type": "feature", accountId, userId,
  productId, moduleId, featureId, total, timestamp}` as csb-node `CSB.feature` sends it,
  `featureId` the event name, `total` `properties.total` when it is a positive integer,
  else 1. Other tracks stay `/track` calls.
- Feature timestamps: CSB aggregates a feature event only when its timestamp's GMT date
  is the day it is pushed (http-server-api/features). An event of today (GMT) keeps its
  own time; any other (held or replayed past midnight, a backfill, none at all) is sent
  with the time of deciding, which is when cs-relay routes or releases it (CONTRACT.md).
- `aggregate` (mapping file): feature-usage calls (`/feature`) are aggregated per
  account, user, product, module and feature and window: `total` is the sum of the
  calls' totals (the window's count when no call carries `properties.total`), and the
  timestamp is the window's start when its GMT date is the day the request is made,
  else the time it is made (the last window of a day closes at midnight: its request
  is made on the next day, which CSB requires the timestamp's date to be). Tracks,
  pages, identify and group calls are still sent one by one (`aggregate_field`,
  `aggregated`).
- Every timestamp is sent as UTC ISO-8601 with `Z` (`streams/core/timestamps.py`).
- Account id: the call's own `traits.account_id` / `properties.account_id`; else the
  account of the group named in `context.groupId`; else the user's remembered account;
  else the account of the user's current group. A group's account is its
  `traits.account_id` when given, otherwise its Segment `groupId` (our choice: in
  Segment the group is the account).
- User id: the call's `traits.user_id` / `properties.user_id`; else the remembered
  CustomerSuccessBox user id; else the Segment userId.
- A call whose account (or user) is still unknown is held until an identify or group
  call makes it known.
- `productId` / `moduleId` / `featureId` are cut to 64 characters, as CustomerSuccessBox does.
- screen and alias are not taken.
- `trait_renames` (mapping file) renames traits of identify and group calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.core.decision import Decision, Hold, PartnerRequest, Send, Skip
from streams.core.mappings import rename_traits
from streams.core.message import Message
from streams.core.state import GroupLookup, UserState
from streams.core.state import trait_text as _text
from streams.core.timestamps import format_utc, read_timestamp
from streams.destinations.customersuccessbox import memory
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings

NAME = "CustomerSuccessBox"
KEY = "customersuccessbox"
API = "/api_js/v1_1"
FEATURE_ID_MAX = 64
# The `type` each endpoint's body carries, as the SDKs send it (identify: "user").
TYPES = {"identify": "user", "account": "account", "track": "track", "feature": "feature", "page": "page"}


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


def feature_total(properties: Mapping[str, Any]) -> int:
    """`properties.total` when it is a positive integer, else 1 (the SDKs' default)."""
    total = properties.get("total")
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        return total
    return 1


def feature_ids(msg: Message) -> tuple[str, str, str] | None:
    """(productId, moduleId, featureId) of a track that is product usage, else None."""
    properties = msg.properties
    product = _feature_id(properties.get("product_id"))
    if not product:
        return None  # most tracks: not product usage
    module = _feature_id(properties.get("module_id"))
    feature = _feature_id(msg.event)
    return (product, module, feature) if module and feature else None


def feature_timestamp(timestamp: str | None, now: datetime) -> str:
    """The event's own time when its GMT date is `now`'s, else `now` (CSB's same-day rule)."""
    return _same_day(read_timestamp(timestamp) if timestamp else None, now)


def _same_day(stamp: tuple[datetime, str] | None, now: datetime) -> str:
    """`feature_timestamp` of a time read already: (the moment, its UTC text)."""
    if stamp is not None and stamp[0].astimezone(UTC).date() == now.astimezone(UTC).date():
        return stamp[1]
    return format_utc(now)


def decide(settings: CustomerSuccessBoxSettings, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """What CustomerSuccessBox gets for `msg`: `decide_at` with the clock read once."""
    return decide_at(settings, msg, user, groups, datetime.now(UTC))


def decide_at(
    settings: CustomerSuccessBoxSettings, msg: Message, user: UserState, groups: GroupLookup, now: datetime
) -> Decision:
    """What CustomerSuccessBox gets for `msg`, given the state after `msg`, at `now`
    (used only for a feature call's timestamp)."""
    if msg.type == "group":
        assert msg.group_id is not None, "a group call has a groupId (segment.validate requires it)"
        body: dict[str, Any] = {
            "type": TYPES["account"],
            "accountId": group_account(msg.group_id, groups),
            "traits": rename_traits(msg.traits, settings.trait_renames),
        }
        return Send(_request("account", body, msg.utc_timestamp))
    if msg.type not in ("identify", "track", "page"):
        return Skip(f"CustomerSuccessBox does not take {msg.type} calls")
    own = msg.traits if msg.type == "identify" else msg.properties
    account = account_id(msg, own, user, groups)
    if not account:
        return Hold("no CustomerSuccessBox account is known for this user yet")
    uid = user_id(msg, own, user)
    if not uid:
        return Hold("no CustomerSuccessBox user id is known for this user yet")
    ids = feature_ids(msg) if msg.type == "track" else None
    endpoint = "feature" if ids else msg.type
    body = {"type": TYPES[endpoint], "accountId": account, "userId": uid}
    if msg.type == "identify":
        body["traits"] = rename_traits(msg.traits, settings.trait_renames)
    elif ids:
        body["productId"], body["moduleId"], body["featureId"] = ids
        body["total"] = feature_total(msg.properties)
        stamp = (msg.moment, msg.utc_timestamp) if msg.moment and msg.utc_timestamp else None
        body["timestamp"] = _same_day(stamp, now)
    elif msg.type == "track":
        body["event"] = msg.event
        body["properties"] = dict(msg.properties)
    else:
        body["name"] = msg.name or msg.properties.get("title") or ""
        body["properties"] = dict(msg.properties)
    return Send(_request(endpoint, body, msg.utc_timestamp))


def _request(endpoint: str, body: dict[str, Any], utc_timestamp: str | None) -> PartnerRequest:
    if utc_timestamp and "timestamp" not in body:
        body["timestamp"] = utc_timestamp
    return PartnerRequest("POST", f"{API}/{endpoint}", body)


def aggregate_field(request: PartnerRequest) -> str | None:
    """Under `aggregate`, feature-usage calls are counted in windows (`total` summed);
    every other call is still sent on its own."""
    return "total" if request.path == f"{API}/feature" else None


def aggregated(request: PartnerRequest, amount: float, start: float, now: float) -> PartnerRequest:
    """The window's one feature call: `total` the window's sum, timestamped with the
    window's start when that is the GMT day of `now` (when the request is made), else
    with `now` (CSB takes a feature event only on the day of its timestamp)."""
    total = int(amount) if float(amount).is_integer() else amount
    stamp = feature_timestamp(format_utc(datetime.fromtimestamp(start, UTC)), datetime.fromtimestamp(now, UTC))
    return PartnerRequest(request.method, request.path, {**request.json, "total": total, "timestamp": stamp})
