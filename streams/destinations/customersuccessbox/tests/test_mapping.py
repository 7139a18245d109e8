"""The mapping from a Segment message (and state) to CustomerSuccessBox requests."""

from streams.destinations.customersuccessbox import mapping as csb
from streams.destinations.customersuccessbox.memory import MEMORY
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings
from streams.core.decision import Hold, Send, Skip
from streams.core.state import GroupState, UserState, apply_to_group, apply_to_user
from tests.factories import msg

NOW = "2026-11-22T00:00:00+00:00"


MEMORIES = [MEMORY]


def decide(m, user, groups):
    return csb.decide(CustomerSuccessBoxSettings(), m, user, groups)


def lookup(*groups: GroupState):
    table = {g.group_id: g for g in groups}
    return table.get


def fresh(key: str = "u1") -> UserState:
    return UserState(key, user_id=key)


def test_identify_with_account_and_user_ids_in_traits():
    m = msg("identify", traits={"account_id": "A1", "user_id": "john@x.example", "plan": "pro"}, timestamp="2026-11-01T00:00:00Z")
    user = apply_to_user(None, m, NOW, memories=MEMORIES)
    decision = decide(m, user, lookup())
    assert isinstance(decision, Send)
    assert decision.request.path == "/api_js/v1_1/identify"
    assert decision.request.json == {
        "type": "identify",
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
    assert track.json == {"type": "track", "accountId": "A1", "userId": "u1", "event": "Report Viewed", "properties": {"x": 1}}
    page = decide(msg("page", name="Billing"), user, lookup(group)).request
    assert page.path == "/api_js/v1_1/page" and page.json["accountId"] == "A1" and page.json["name"] == "Billing"


def test_account_precedence_call_then_context_group_then_state():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "STATE"}}, group_id="acme")
    groups = lookup(GroupState("acme", slots={"customersuccessbox": {"account_id": "ACME"}}), GroupState("globex", slots={"customersuccessbox": {"account_id": "GLOBEX"}}))
    own = msg("track", event="E", properties={"account_id": "OWN"}, context={"groupId": "globex"})
    ctx = msg("track", event="E", context={"groupId": "globex"})
    plain = msg("track", event="E")
    assert decide(own, user, groups).request.json["accountId"] == "OWN"
    assert decide(ctx, user, groups).request.json["accountId"] == "GLOBEX"
    assert decide(plain, user, groups).request.json["accountId"] == "STATE"


def test_user_id_precedence_call_then_state_then_segment_user_id():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A", "user_id": "csb-u"}})
    assert decide(msg("track", event="E", properties={"user_id": "own"}), user, lookup()).request.json["userId"] == "own"
    assert decide(msg("track", event="E"), user, lookup()).request.json["userId"] == "csb-u"
    plain = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    assert decide(msg("track", event="E"), plain, lookup()).request.json["userId"] == "u1"


def test_product_and_module_ids_are_cut_to_64_characters():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    m = msg("track", event="Feature Used", properties={"product_id": "p" * 80, "module_id": "reports"})
    body = decide(m, user, lookup()).request.json
    assert body["productId"] == "p" * 64 and body["moduleId"] == "reports"


def test_engage_audience_identify_reaches_csb_as_boolean_trait():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    m = msg("identify", traits={"order_completed_last_30days": True})
    body = decide(m, apply_to_user(user, m, NOW, memories=MEMORIES), lookup()).request.json
    assert body["traits"] == {"order_completed_last_30days": True} and body["accountId"] == "A"


def test_screen_and_alias_are_skipped():
    user = UserState("u1", user_id="u1", slots={"customersuccessbox": {"account_id": "A"}})
    assert isinstance(decide(msg("screen", name="Home"), user, lookup()), Skip)
    assert isinstance(decide(msg("alias", previousId="anon"), user, lookup()), Skip)
