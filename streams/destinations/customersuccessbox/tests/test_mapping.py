"""The mapping from a Segment message (and state) to CustomerSuccessBox requests."""

from datetime import UTC, datetime

import pytest

from streams.core.decision import Hold, Send, Skip
from streams.core.reducers import apply_to_group, apply_to_user
from streams.core.state import GroupState, UserState
from streams.destinations.customersuccessbox import mapping as csb
from streams.destinations.customersuccessbox.memory import MEMORY
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings
from tests.factories import msg

NOW = "2026-11-22T00:00:00+00:00"
AT = datetime(2026, 11, 30, 12, 0, 0, 123000, tzinfo=UTC)  # the moment of deciding


MEMORIES = [MEMORY]


def decide(m, user, groups):
    return csb.decide(CustomerSuccessBoxSettings(), m, user, groups)


def decide_at(m, user, groups, at):
    return csb.decide_at(CustomerSuccessBoxSettings(), m, user, groups, at)


def lookup(*groups: GroupState):
    table = {g.group_id: g for g in groups}
    return table.get


def fresh(key: str = "u1") -> UserState:
    return UserState(key, user_id=key)


def test_identify_with_account_and_user_ids_in_traits():
    m = msg(
        "identify",
        traits={"account_id": "A1", "user_id": "john@x.example", "plan": "pro"},
        timestamp="2026-11-01T00:00:00Z",
    )
    user = apply_to_user(None, m, NOW, memories=MEMORIES)
    decision = decide(m, user, lookup())
    assert isinstance(decision, Send)
    assert decision.request.path == "/api_js/v1_1/identify"
    assert decision.request.json == {
        "type": "user",
        "accountId": "A1",
        "userId": "john@x.example",
        "traits": {"account_id": "A1", "user_id": "john@x.example", "plan": "pro"},
        "timestamp": "2026-11-01T00:00:00Z",
    }


def test_track_without_any_account_is_held():
    assert isinstance(decide(msg("track", event="E"), fresh(), lookup()), Hold)


def test_group_becomes_account_call_with_traits_account_id_or_group_id():
    with_id = msg("group", groupId="acme", traits={"account_id": "A1", "name": "Acme"})
    g = apply_to_group(None, with_id, NOW, memories=MEMORIES)
    req = decide(with_id, apply_to_user(None, with_id, NOW, memories=MEMORIES), lookup(g)).request
    assert req.path == "/api_js/v1_1/account"
    assert req.json["accountId"] == "A1" and req.json["traits"]["name"] == "Acme"
    without = msg("group", groupId="globex", traits={"name": "Globex"})
    g2 = apply_to_group(None, without, NOW, memories=MEMORIES)
    assert decide(without, fresh(), lookup(g2)).request.json["accountId"] == "globex"


def test_account_flows_from_group_call_into_later_track_and_page():
    g_msg = msg("group", groupId="acme", traits={"account_id": "A1", "name": "Acme"})
    user = apply_to_user(fresh(), g_msg, NOW, memories=MEMORIES)
    group = apply_to_group(None, g_msg, NOW, memories=MEMORIES)
    track = decide(msg("track", event="Report Viewed", properties={"x": 1}), user, lookup(group)).request
    assert track.json == {
        "type": "track",
        "accountId": "A1",
        "userId": "u1",
        "event": "Report Viewed",
        "properties": {"x": 1},
    }
    page = decide(msg("page", name="Billing"), user, lookup(group)).request
    assert page.path == "/api_js/v1_1/page" and page.json["accountId"] == "A1" and page.json["name"] == "Billing"


def test_account_precedence_call_then_context_group_then_state():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "STATE"}}, group_id="acme")
    groups = lookup(
        GroupState("acme", slots={"customersuccessbox": {"account_id": "ACME"}}),
        GroupState("globex", slots={"customersuccessbox": {"account_id": "GLOBEX"}}),
    )
    own = msg("track", event="E", properties={"account_id": "OWN"}, context={"groupId": "globex"})
    ctx = msg("track", event="E", context={"groupId": "globex"})
    plain = msg("track", event="E")
    assert decide(own, user, groups).request.json["accountId"] == "OWN"
    assert decide(ctx, user, groups).request.json["accountId"] == "GLOBEX"
    assert decide(plain, user, groups).request.json["accountId"] == "STATE"


def test_user_id_precedence_call_then_state_then_segment_user_id():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A", "user_id": "csb-u"}})
    assert (
        decide(msg("track", event="E", properties={"user_id": "own"}), user, lookup()).request.json["userId"] == "own"
    )
    assert decide(msg("track", event="E"), user, lookup()).request.json["userId"] == "csb-u"
    plain = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    assert decide(msg("track", event="E"), plain, lookup()).request.json["userId"] == "u1"


def known() -> UserState:
    return UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})


def test_track_with_product_and_module_becomes_a_feature_call():
    m = msg(
        "track",
        event="Report Built",
        properties={"product_id": "analytics", "module_id": "reports", "x": 1},
        timestamp="2026-11-30T09:15:00.250+01:00",
    )
    request = decide_at(m, known(), lookup(), AT).request
    assert request.path == "/api_js/v1_1/feature"
    assert request.json == {
        "type": "feature",
        "accountId": "A",
        "userId": "u1",
        "productId": "analytics",
        "moduleId": "reports",
        "featureId": "Report Built",
        "total": 1,
        "timestamp": "2026-11-30T08:15:00.250Z",
    }


@pytest.mark.parametrize(
    "properties",
    [
        {"product_id": "analytics"},
        {"module_id": "reports"},
        {"product_id": "", "module_id": "reports"},
        {"product_id": "analytics", "module_id": None},
        {"product_id": True, "module_id": "reports"},
    ],
)
def test_track_without_both_product_and_module_stays_a_track_call(properties):
    m = msg("track", event="Report Built", properties=properties, timestamp="2026-11-02T00:00:00Z")
    request = decide_at(m, known(), lookup(), AT).request
    assert request.path == "/api_js/v1_1/track"
    assert request.json == {
        "type": "track",
        "accountId": "A",
        "userId": "u1",
        "event": "Report Built",
        "properties": properties,
        "timestamp": "2026-11-02T00:00:00Z",
    }


@pytest.mark.parametrize(
    "total, sent",
    [
        (5, 5),
        (1, 1),
        (None, 1),
        (0, 1),
        (-3, 1),
        (2.5, 1),
        (3.0, 1),
        ("4", 1),
        (True, 1),
        ([2], 1),
    ],
)
def test_feature_total_is_properties_total_when_a_positive_integer_else_one(total, sent):
    properties = {"product_id": "p", "module_id": "m"} | ({} if total is None else {"total": total})
    body = decide_at(msg("track", event="E", properties=properties), known(), lookup(), AT).request.json
    assert body["total"] == sent


def test_feature_ids_are_cut_to_64_characters():
    m = msg("track", event="e" * 65, properties={"product_id": "p" * 80, "module_id": "m" * 64})
    body = decide_at(m, known(), lookup(), AT).request.json
    assert (body["productId"], body["moduleId"], body["featureId"]) == ("p" * 64, "m" * 64, "e" * 64)


def test_numeric_product_and_module_ids_are_sent_as_text():
    body = decide_at(msg("track", event="E", properties={"product_id": 7, "module_id": 12}), known(), lookup(), AT)
    assert (body.request.json["productId"], body.request.json["moduleId"]) == ("7", "12")


@pytest.mark.parametrize(
    "timestamp, sent",
    [
        ("2026-11-30T00:00:00Z", "2026-11-30T00:00:00Z"),  # today (GMT): its own time
        ("2026-11-30T01:30:00+01:00", "2026-11-30T00:30:00Z"),
        ("2026-11-30T10:00:00", "2026-11-30T10:00:00Z"),  # no offset: UTC
        ("2026-11-30T23:00:00Z", "2026-11-30T23:00:00Z"),  # later today (a fast clock) is still today
        ("2026-11-29T23:59:59.999Z", "2026-11-30T12:00:00.123Z"),  # yesterday: the time of sending
        ("2026-11-30T00:30:00+01:00", "2026-11-30T12:00:00.123Z"),  # 23:30 GMT yesterday
        ("2026-11-18T11:30:06Z", "2026-11-30T12:00:00.123Z"),  # the sample's fixed dates
        ("2026-12-01T00:00:00Z", "2026-11-30T12:00:00.123Z"),  # tomorrow
        (None, "2026-11-30T12:00:00.123Z"),  # the SDKs always send one
    ],
)
def test_feature_timestamp_is_its_own_when_of_todays_gmt_date_else_the_time_of_sending(timestamp, sent):
    fields = {"timestamp": timestamp} if timestamp else {}
    m = msg("track", event="E", properties={"product_id": "p", "module_id": "m"}, **fields)
    assert decide_at(m, known(), lookup(), AT).request.json["timestamp"] == sent


def test_decide_reads_the_clock_for_a_backdated_feature():
    m = msg("track", event="E", properties={"product_id": "p", "module_id": "m"}, timestamp="2020-01-01T00:00:00Z")
    before = datetime.now(UTC)
    sent = datetime.fromisoformat(decide(m, known(), lookup()).request.json["timestamp"])
    assert before <= sent <= datetime.now(UTC)


@pytest.mark.parametrize(
    "timestamp, sent",
    [
        ("2026-11-01T10:00:00+02:00", "2026-11-01T08:00:00Z"),
        ("2026-11-01T10:00:00-0530", "2026-11-01T15:30:00Z"),
        ("2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z"),
        ("2026-11-01T10:00:00", "2026-11-01T10:00:00Z"),
        ("2026-11-01T10:00:00.5Z", "2026-11-01T10:00:00.500Z"),
    ],
)
def test_every_endpoint_sends_its_timestamp_in_utc_with_an_offset(timestamp, sent):
    group = msg("group", groupId="acme", traits={"account_id": "A"}, timestamp=timestamp)
    calls = [
        group,
        msg("identify", traits={"account_id": "A"}, timestamp=timestamp),
        msg("track", event="E", timestamp=timestamp),
        msg("page", name="P", timestamp=timestamp),
    ]
    g = apply_to_group(None, group, NOW, memories=MEMORIES)
    for m in calls:
        request = decide_at(m, known(), lookup(g), AT).request
        assert request.json["timestamp"] == sent, request.path


def test_every_endpoint_carries_the_type_its_sdk_sends():
    g_msg = msg("group", groupId="acme", traits={"account_id": "A"})
    g = apply_to_group(None, g_msg, NOW, memories=MEMORIES)
    calls = {
        "account": g_msg,
        "identify": msg("identify"),
        "track": msg("track", event="E"),
        "page": msg("page"),
        "feature": msg("track", event="E", properties={"product_id": "p", "module_id": "m"}),
    }
    types = {}
    for endpoint, m in calls.items():
        request = decide_at(m, known(), lookup(g), AT).request
        assert request.path == f"/api_js/v1_1/{endpoint}"
        types[endpoint] = request.json["type"]
    assert types == {"account": "account", "identify": "user", "track": "track", "page": "page", "feature": "feature"}


def test_page_body_name_then_title_then_empty():
    assert decide_at(msg("page", name="Billing"), known(), lookup(), AT).request.json == {
        "type": "page",
        "accountId": "A",
        "userId": "u1",
        "name": "Billing",
        "properties": {},
    }
    titled = msg("page", properties={"title": "Docs"})
    assert decide_at(titled, known(), lookup(), AT).request.json["name"] == "Docs"
    assert decide_at(msg("page"), known(), lookup(), AT).request.json["name"] == ""


def test_a_feature_without_an_account_is_held_like_any_track():
    m = msg("track", event="E", properties={"product_id": "p", "module_id": "m"})
    assert isinstance(decide_at(m, fresh(), lookup(), AT), Hold)


def test_engage_audience_identify_reaches_csb_as_boolean_trait():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    m = msg("identify", traits={"order_completed_last_30days": True})
    body = decide(m, apply_to_user(user, m, NOW, memories=MEMORIES), lookup()).request.json
    assert body["traits"] == {"order_completed_last_30days": True} and body["accountId"] == "A"


def test_screen_and_alias_are_skipped():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    assert isinstance(decide(msg("screen", name="Home"), user, lookup()), Skip)
    assert isinstance(decide(msg("alias", previousId="anon"), user, lookup()), Skip)
