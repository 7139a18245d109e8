"""The mapping from a Segment message (and state) to the webhook request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from streams.core.decision import Decision, Hold, Send
from streams.core.destination import Destination
from streams.core.pending import Pending
from streams.core.reducers import apply_to_group, apply_to_user
from streams.core.state import GroupState, UserState
from streams.core.step import step
from streams.destinations.webhook import mapping
from streams.destinations.webhook.settings import WebhookSettings
from tests.factories import msg, raw

URL = "https://hooks.example.com/segment"
NOW = "2026-11-30T00:00:00+00:00"
ACME = GroupState("acme", name="Acme Corp", traits={"name": "Acme Corp", "plan": "pro"})
ACME_VIEW = {"id": "acme", "name": "Acme Corp", "traits": {"name": "Acme Corp", "plan": "pro"}}
CALLS: dict[str, dict[str, Any]] = {
    "identify": {"traits": {"email": "a@x.io"}},
    "group": {"groupId": "acme", "traits": {"name": "Acme Corp"}},
    "track": {"event": "Report Built", "properties": {"value": 3}},
    "page": {"name": "Pricing"},
    "screen": {"name": "Home"},
    "alias": {"previousId": "anon-1"},
}


def settings(wait: bool = False) -> WebhookSettings:
    return WebhookSettings(url=URL, wait_for_group=wait)


def lookup(*groups: GroupState):
    table = {g.group_id: g for g in groups}
    return table.get


def body_of(decision: Decision) -> Mapping[str, Any]:
    """The JSON body of a decision that must be a `Send`."""
    assert isinstance(decision, Send), decision
    return decision.request.json


def user_in(group: str | None) -> UserState:
    return UserState("u1", user_id="u1", group_id=group, groups=(group,) if group else ())


@pytest.mark.parametrize("type_", sorted(CALLS))
def test_every_call_type_is_posted_as_the_segment_message(type_):
    m = msg(type_, timestamp="2026-11-20T10:00:00Z", context={"ip": "10.0.0.1"}, **CALLS[type_])
    user = user_in("acme" if type_ == "group" else None)
    decision = mapping.decide(settings(), m, user, lookup())
    assert isinstance(decision, Send)
    request = decision.request
    assert (request.method, request.path, dict(request.query)) == ("POST", "", {})
    expected = json.loads(raw(m))
    if type_ == "group":  # the group call names its group: context.groupId says so too
        expected["context"]["groupId"] = "acme"
    assert request.json == expected
    assert request.json["type"] == type_ and request.json["messageId"] == m.message_id


def test_unknown_fields_and_the_derived_message_id_travel_unchanged():
    m = msg("track", event="E", messageId=None, custom={"nested": [1, 2.5, None]}, version=2)
    body = body_of(mapping.decide(settings(), m, user_in(None), lookup()))
    assert body["custom"] == {"nested": [1, 2.5, None]} and body["version"] == 2
    assert body["messageId"].startswith("csr-") and body["messageId"] == m.message_id


@pytest.mark.parametrize("type_", ["identify", "track", "page", "screen", "alias"])
def test_group_id_and_group_are_filled_from_the_users_state(type_):
    m = msg(type_, **CALLS[type_])
    body = body_of(mapping.decide(settings(), m, user_in("acme"), lookup(ACME)))
    assert body["context"] == {"groupId": "acme", "group": ACME_VIEW}


def test_the_callers_context_is_kept_and_never_modified_in_place():
    m = msg("track", event="E", context={"ip": "10.0.0.1", "library": {"name": "analytics-python"}})
    before = json.loads(raw(m))
    body = body_of(mapping.decide(settings(), m, user_in("acme"), lookup(ACME)))
    assert body["context"] == {
        "ip": "10.0.0.1",
        "library": {"name": "analytics-python"},
        "groupId": "acme",
        "group": ACME_VIEW,
    }
    assert json.loads(raw(m)) == before  # the parsed message (its raw object) is untouched


def test_a_calls_own_context_group_id_wins_and_its_group_is_attached():
    other = GroupState("globex", name="Globex", traits={"tier": 1})
    m = msg("track", event="E", context={"groupId": "globex"})
    body = body_of(mapping.decide(settings(), m, user_in("acme"), lookup(ACME, other)))
    assert body["context"] == {"groupId": "globex", "group": {"id": "globex", "name": "Globex", "traits": {"tier": 1}}}


def test_a_context_group_id_of_an_unknown_group_is_left_alone():
    m = msg("track", event="E", context={"groupId": 42})
    body = body_of(mapping.decide(settings(), m, user_in("acme"), lookup(ACME)))
    assert body["context"] == {"groupId": 42}  # as the caller sent it (a number), no group attached


def test_a_group_id_known_only_to_the_user_is_filled_without_a_group():
    body = body_of(mapping.decide(settings(), msg("page", name="P"), user_in("acme"), lookup()))
    assert body["context"] == {"groupId": "acme"}


def test_a_callers_own_context_group_is_not_replaced():
    mine = {"id": "acme", "name": "From the caller"}
    m = msg("track", event="E", context={"group": mine})
    body = body_of(mapping.decide(settings(), m, user_in("acme"), lookup(ACME)))
    assert body["context"] == {"group": mine, "groupId": "acme"}


def test_nothing_is_added_without_a_group():
    m = msg("track", event="E")
    body = body_of(mapping.decide(settings(), m, user_in(None), lookup()))
    assert "context" not in body and body == json.loads(raw(m))


def test_a_group_call_carries_the_groups_state_after_the_call():
    m = msg("group", groupId="acme", traits={"plan": "enterprise"})
    group = apply_to_group(ACME, m, NOW)
    user = apply_to_user(user_in("globex"), m, NOW)
    body = body_of(mapping.decide(settings(), m, user, lookup(group)))
    assert body["context"]["groupId"] == "acme"
    assert body["context"]["group"] == {
        "id": "acme",
        "name": "Acme Corp",
        "traits": {"name": "Acme Corp", "plan": "enterprise"},
    }


def test_by_default_a_track_before_any_group_is_sent_at_once():
    decision = mapping.decide(settings(wait=False), msg("track", event="E"), user_in(None), lookup())
    assert isinstance(decision, Send)


@pytest.mark.parametrize("type_", ["track", "page", "screen"])
def test_waiting_for_the_group_holds_track_page_and_screen(type_):
    m = msg(type_, **CALLS[type_])
    assert isinstance(mapping.decide(settings(wait=True), m, user_in(None), lookup()), Hold)
    # the user's group id alone is not enough: the group itself must be known
    assert isinstance(mapping.decide(settings(wait=True), m, user_in("acme"), lookup()), Hold)
    sent = mapping.decide(settings(wait=True), m, user_in("acme"), lookup(ACME))
    assert isinstance(sent, Send) and sent.request.json["context"]["group"] == ACME_VIEW


@pytest.mark.parametrize("type_", ["identify", "group", "alias"])
def test_waiting_for_the_group_never_holds_identify_group_or_alias(type_):
    m = msg(type_, **CALLS[type_])
    assert isinstance(mapping.decide(settings(wait=True), m, user_in(None), lookup()), Send)


def test_waiting_for_the_group_accepts_a_known_group_named_by_the_call():
    m = msg("track", event="E", context={"groupId": "acme"})
    assert isinstance(mapping.decide(settings(wait=True), m, user_in(None), lookup(ACME)), Send)
    m = msg("track", event="E", context={"groupId": "unknown"})
    assert isinstance(mapping.decide(settings(wait=True), m, user_in(None), lookup(ACME)), Hold)


def _run(messages, wait: bool):
    """Messages through the core's step with the webhook as the only destination."""
    dest = Destination(mapping.KEY, mapping.NAME, lambda m, u, g: mapping.decide(settings(wait), m, u, g))
    user: UserState | None = None
    pending = Pending()
    groups: dict[str, GroupState] = {}
    sent: list[list[Mapping[str, Any]]] = []
    for m in messages:
        result = step(
            "u1",
            m,
            raw(m),
            {},
            user,
            pending,
            groups.get,
            [dest],
            now=0.0,
            now_iso=NOW,
            max_pending=100,
            max_pending_age=3600.0,
        )
        user, pending = result.user, result.pending
        if result.group is not None:
            groups[result.group.group_id] = result.group
        sent.append([d.request.json for d in result.dispatches])
    return sent


def test_through_the_step_held_calls_go_out_in_order_once_the_group_call_arrives():
    early = [msg("track", event="One"), msg("page", name="Two"), msg("screen", name="Three")]
    group = msg("group", groupId="acme", traits={"name": "Acme Corp"})
    later = msg("track", event="Four")
    sent = _run([*early, group, later], wait=True)
    assert sent[:3] == [[], [], []]
    released = sent[3]
    assert [b["type"] for b in released] == ["track", "page", "screen", "group"]
    assert [b["messageId"] for b in released] == [m.message_id for m in (*early, group)]
    for body in released:
        assert body["context"]["groupId"] == "acme"
        assert body["context"]["group"] == {"id": "acme", "name": "Acme Corp", "traits": {"name": "Acme Corp"}}
    assert [b["event"] for b in sent[4]] == ["Four"]


def test_through_the_step_nothing_waits_by_default():
    sent = _run([msg("track", event="One"), msg("group", groupId="acme", traits={"name": "Acme"})], wait=False)
    assert len(sent[0]) == 1 and "context" not in sent[0][0]
    assert [b["type"] for b in sent[1]] == ["group"]


def test_integrations_name_is_segments_webhooks():
    from streams.core.message import destination_enabled

    assert mapping.NAME == "Webhooks" and mapping.KEY == "webhook"
    assert not destination_enabled({"Webhooks": False}, mapping.NAME)
    assert not destination_enabled({"All": False}, mapping.NAME)
    assert destination_enabled({"All": False, "Webhooks": True}, mapping.NAME)
