"""How a Segment message becomes a ClientSuccess Usage API request.

Rules (../shared/partner-contracts.md section 2 and the ClientSuccess destination page):

- identify and group only update cs-relay's state; the Usage API has no call for them.
  The user's name and email then travel in `identity.user` of every later event.
- group needs both `groupId` and `traits.name` (or a name already known for the group):
  without a name the call is rejected for ClientSuccess.
- track and page become events at
  `POST /collector/1.0.0/projects/{sourceId}/events/{eventId}` with
  `{"identity": {"organization": {id, name}, "user": {id, name, email}}, "value", "timestamp"}`.
- The organization is the group named in `context.groupId` when the call names one,
  else the user's current group (the latest group call). Without a known organization
  and name the event is held until the user's group call arrives.
- track value: `properties.value` when it is a number, else 1 (`value_property` in the
  mapping file names another property). page event name:
  `Viewed {name} Page` when the page has a name, else `Loaded a Page`.
- screen and alias are not taken by ClientSuccess.
- `aggregate` (mapping file): every event request is aggregated; the window's request
  carries the sum of the window's values as `value` and the window's start as
  `timestamp` (`aggregate_field`, `aggregated`; streams/core/aggregate.py).
- `timestamp` is sent as UTC ISO-8601 with `Z` (one without an offset is read as UTC:
  `streams/core/timestamps.py`); `identity.user.email` lower-cased, as the help page
  asks ("How to ingest and view usage events").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from streams.core.decision import Decision, Hold, PartnerRequest, Reject, Send, Skip
from streams.core.message import Message
from streams.core.state import GroupLookup, GroupState, UserState
from streams.core.timestamps import format_utc
from streams.destinations.clientsuccess.settings import ClientSuccessSettings

NAME = "ClientSuccess"
KEY = "clientsuccess"


def event_name(msg: Message) -> str:
    """The ClientSuccess event id for a track or page call."""
    if msg.type == "page":
        return f"Viewed {msg.name} Page" if msg.name else "Loaded a Page"
    assert msg.event is not None, "a track call has an event (segment.validate requires it)"
    return msg.event


def event_value(msg: Message, value_property: str = "value") -> int | float:
    """`properties[value_property]` when it is a number, else 1."""
    value = msg.properties.get(value_property)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return value
    return 1


def organization(msg: Message, user: UserState, groups: GroupLookup) -> GroupState | None:
    """The group the event belongs to, if it is known with a name."""
    group_id = msg.context_group_id or user.group_id
    if not group_id:
        return None
    group = groups(group_id)
    if group is None or not group.name:
        return None
    return group


def decide(settings: ClientSuccessSettings, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """What ClientSuccess gets for `msg`, given the user's state after `msg`."""
    if msg.type == "identify":
        return Skip("identify updates the user's state only")
    if msg.type == "group":
        assert msg.group_id is not None, "a group call has a groupId (segment.validate requires it)"
        group = groups(msg.group_id)
        if group is None or not group.name:
            return Reject("group_without_name", "ClientSuccess needs traits.name on a group call")
        return Skip("group updates the organization's state only")
    if msg.type not in ("track", "page"):
        return Skip(f"ClientSuccess does not take {msg.type} calls")
    org = organization(msg, user, groups)
    if org is None:
        return Hold("no group with a name is known for this user yet")
    return Send(build_event(msg, user, org, settings.events_path, settings.value_property))


def build_event(
    msg: Message, user: UserState, org: GroupState, events_path: str, value_property: str = "value"
) -> PartnerRequest:
    """The Usage API request for a track or page call attributed to `org`, posted under
    `events_path` (`ClientSuccessSettings.events_path`)."""
    user_identity: dict[str, Any] = {"id": msg.user_id or user.user_id or msg.key}
    if user.display_name:
        user_identity["name"] = user.display_name
    if user.email:
        user_identity["email"] = user.email.lower()
    body: dict[str, Any] = {
        "identity": {
            "organization": {"id": org.group_id, "name": org.name},
            "user": user_identity,
        },
        "value": event_value(msg, value_property),
    }
    if msg.utc_timestamp:
        body["timestamp"] = msg.utc_timestamp
    return PartnerRequest("POST", f"{events_path}/{quote(event_name(msg), safe='')}", body)


def aggregate_field(request: PartnerRequest) -> str | None:
    """Under `aggregate`, every Usage API event is counted in its window: `value` is summed."""
    return "value"


def aggregated(request: PartnerRequest, amount: float, start: float, now: float) -> PartnerRequest:
    """The window's one event: the sum of its values, stamped with the window's start."""
    body = {**request.json, "value": amount, "timestamp": format_utc(datetime.fromtimestamp(start, UTC))}
    return PartnerRequest(request.method, request.path, body, request.query)
