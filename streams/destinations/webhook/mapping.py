"""How a Segment message becomes a webhook request (CONTRACT.md).

- Every call type (identify, group, track, page, screen, alias) is sent, as a POST of
  the Segment message itself (the object as received, with its messageId) to
  `WEBHOOK_URL`; the request path is "" because the URL is the whole address.
- The group the call belongs to is the group named in its `context.groupId`; for a
  group call, its `groupId`; else the user's current group (the latest group call).
- When the call has no `context.groupId` and such a group is known, it is filled in;
  when cs-relay knows that group (a group call for it was seen), `context.group` carries
  `{"id", "name", "traits"}` (unless the caller set `context.group` itself).
- `WEBHOOK_WAIT_FOR_GROUP=true` holds track, page and screen calls until that group is
  known; the shared pending queue then releases them in order. identify, group and
  alias are never held on their own (they wait only behind the user's held calls).
- `trait_renames` (mapping file) renames keys of the call's `traits` and of the
  `context.group.traits` cs-relay adds. The rest of the mapping file (allow, deny, rename,
  pages, screens) reaches the webhook as the message it is given: a renamed event or a
  collapsed page arrives as the track call it became (docs/mappings.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.core.decision import Decision, Hold, PartnerRequest, Send
from streams.core.mappings import rename_traits
from streams.core.message import Message
from streams.core.state import GroupLookup, GroupState, UserState
from streams.destinations.webhook.settings import WebhookSettings

NAME = "Webhooks"  # Segment's integrations name for its Webhooks destination
KEY = "webhook"
WAITS_FOR_GROUP = frozenset({"track", "page", "screen"})


def group_id_of(msg: Message, user: UserState) -> str | None:
    """The id of the group the call belongs to, if any is known."""
    if msg.context_group_id:
        return msg.context_group_id
    if msg.type == "group":
        return msg.group_id
    return user.group_id


def group_view(group: GroupState, trait_renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"id": group.group_id, "name": group.name, "traits": rename_traits(group.traits, trait_renames or {})}


def decide(settings: WebhookSettings, msg: Message, user: UserState, groups: GroupLookup) -> Decision:
    """What the webhook gets for `msg`, given the user's state after `msg`."""
    group_id = group_id_of(msg, user)
    group = groups(group_id) if group_id else None
    if settings.wait_for_group and msg.type in WAITS_FOR_GROUP and group is None:
        return Hold("no group is known for this user yet (WEBHOOK_WAIT_FOR_GROUP)")
    return Send(PartnerRequest("POST", "", build_body(msg, group_id, group, settings.trait_renames)))


def build_body(
    msg: Message, group_id: str | None, group: GroupState | None, trait_renames: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The Segment message as received, with the known group added to its context and
    its traits renamed by `trait_renames`. `msg.raw` itself is never modified."""
    body = dict(msg.raw)
    if trait_renames and isinstance(msg.raw.get("traits"), dict):
        body["traits"] = rename_traits(msg.traits, trait_renames)
    context = dict(msg.context)
    if group_id and not msg.context_group_id:
        context["groupId"] = group_id
    if group is not None and "group" not in context:
        context["group"] = group_view(group, trait_renames)
    if context != dict(msg.context):
        body["context"] = context
    return body
