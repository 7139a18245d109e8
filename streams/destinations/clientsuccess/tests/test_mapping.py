"""The mapping from a Segment message (and state) to a ClientSuccess request."""

import pytest

from streams.core.decision import Hold, Reject, Send, Skip
from streams.core.reducers import apply_to_group, apply_to_user
from streams.core.state import GroupState, UserState
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.clientsuccess.settings import ClientSuccessSettings
from tests.factories import msg

NOW = "2026-11-22T00:00:00+00:00"
ACME = GroupState("acme", name="Acme Corp")


def decide(m, user, groups, source_id):
    return cs.decide(ClientSuccessSettings(source_id=source_id), m, user, groups)


def lookup(*groups: GroupState):
    table = {g.group_id: g for g in groups}
    return table.get


def user_in(group: str | None = "acme", **traits) -> UserState:
    return UserState("u1", user_id="u1", group_id=group, groups=(group,) if group else (), traits=traits)


def test_track_before_any_group_is_held():
    decision = decide(msg("track", event="Signed In"), user_in(None), lookup(), "src")
    assert isinstance(decision, Hold)


def test_track_after_group_becomes_usage_event_with_organization_and_user():
    user = user_in(firstName="Alice", lastName="Ng", email="alice@acme.example")
    m = msg("track", event="Report Viewed", timestamp="2026-11-01T10:00:00Z")
    decision = decide(m, user, lookup(ACME), "src-1")
    assert isinstance(decision, Send)
    req = decision.request
    assert req.method == "POST"
    assert req.path == "/collector/1.0.0/projects/src-1/events/Report%20Viewed"
    assert req.json == {
        "identity": {
            "organization": {"id": "acme", "name": "Acme Corp"},
            "user": {"id": "u1", "name": "Alice Ng", "email": "alice@acme.example"},
        },
        "value": 1,
        "timestamp": "2026-11-01T10:00:00Z",
    }
    assert "api_key" not in req.query  # credentials are added by the delivery client only


def test_value_is_properties_value_when_numeric_else_one():
    user = user_in()
    assert (
        decide(msg("track", event="E", properties={"value": -2.5}), user, lookup(ACME), "s").request.json["value"]
        == -2.5
    )
    assert (
        decide(msg("track", event="E", properties={"value": "7"}), user, lookup(ACME), "s").request.json["value"] == 1
    )
    assert (
        decide(msg("track", event="E", properties={"value": True}), user, lookup(ACME), "s").request.json["value"] == 1
    )


def test_page_event_names():
    user = user_in()
    named = decide(msg("page", name="Pricing"), user, lookup(ACME), "s").request
    unnamed = decide(msg("page"), user, lookup(ACME), "s").request
    assert named.path.endswith("/events/Viewed%20Pricing%20Page")
    assert unnamed.path.endswith("/events/Loaded%20a%20Page")


def test_context_group_id_names_the_organization():
    other = GroupState("globex", name="Globex")
    m = msg("track", event="E", context={"groupId": "globex"})
    req = decide(m, user_in("acme"), lookup(ACME, other), "s").request
    assert req.json["identity"]["organization"] == {"id": "globex", "name": "Globex"}


def test_group_without_a_name_is_rejected_and_with_a_name_only_updates_state():
    nameless = msg("group", groupId="g9", traits={"plan": "pro"})
    g = apply_to_group(None, nameless, NOW)
    assert isinstance(decide(nameless, user_in("g9"), lookup(g), "s"), Reject)
    named = msg("group", groupId="acme", traits={"name": "Acme Corp"})
    assert isinstance(decide(named, user_in(), lookup(apply_to_group(None, named, NOW)), "s"), Skip)


def test_group_known_only_without_name_holds_events():
    g = GroupState("g9", name=None)
    assert isinstance(decide(msg("track", event="E"), user_in("g9"), lookup(g), "s"), Hold)


def test_identify_traits_name_the_user_on_later_events():
    user = apply_to_user(user_in(), msg("identify", traits={"firstName": "Bo", "email": "bo@x.example"}), NOW)
    req = decide(msg("track", event="E"), user, lookup(ACME), "s").request
    assert req.json["identity"]["user"] == {"id": "u1", "name": "Bo", "email": "bo@x.example"}


def test_identify_screen_alias_send_nothing():
    for m in (msg("identify", traits={}), msg("screen", name="Home"), msg("alias", previousId="a1")):
        assert isinstance(decide(m, user_in(), lookup(ACME), "s"), Skip)


def test_timestamp_is_omitted_when_absent():
    req = decide(msg("track", event="E"), user_in(), lookup(ACME), "s").request
    assert "timestamp" not in req.json


@pytest.mark.parametrize(
    "email, sent",
    [
        ("Bo.Smith@Example.COM", "bo.smith@example.com"),
        ("bo@x.example", "bo@x.example"),
        ("ÉLODIE@X.EXAMPLE", "élodie@x.example"),
    ],
)
def test_email_is_sent_lower_cased(email, sent):
    user = apply_to_user(user_in(), msg("identify", traits={"email": email}), NOW)
    req = decide(msg("track", event="E"), user, lookup(ACME), "s").request
    assert req.json["identity"]["user"]["email"] == sent
    assert user.email == email  # the state keeps it as given: the webhook forwards the message as received


@pytest.mark.parametrize(
    "timestamp, sent",
    [
        ("2026-11-01T10:20:30+02:00", "2026-11-01T08:20:30Z"),
        ("2026-11-01T01:20:30-0500", "2026-11-01T06:20:30Z"),
        ("2026-11-01T23:20:30-05:00", "2026-11-02T04:20:30Z"),  # the offset moves it to the next day
        ("2026-11-01T10:20:30Z", "2026-11-01T10:20:30Z"),
        ("2026-11-01T10:20:30", "2026-11-01T10:20:30Z"),  # no offset: read as UTC
        ("2026-11-01T10:20:30.123Z", "2026-11-01T10:20:30.123Z"),
        ("2026-11-01T10:20:30.123456789+01:00", "2026-11-01T09:20:30.123456Z"),
    ],
)
def test_timestamp_is_sent_in_utc_with_an_offset(timestamp, sent):
    for m in (msg("track", event="E", timestamp=timestamp), msg("page", name="P", timestamp=timestamp)):
        assert decide(m, user_in(), lookup(ACME), "s").request.json["timestamp"] == sent
