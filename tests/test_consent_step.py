"""Consent through the step (streams.core.step, streams.core.reducers): a destination that
names categories gets only the calls that grant them, judged at arrival before the
integrations object, and never the traits or group that calls kept from it brought."""

from __future__ import annotations

from dataclasses import replace

from streams.core.state import GroupState, UserState
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.customersuccessbox import mapping as csb
from tests.factories import msg
from tests.test_relay import DESTS, World

ANALYTICS = {"consent": {"categoryPreferences": {"analytics": True}}}
NO_ANALYTICS = {"consent": {"categoryPreferences": {"analytics": False}}}
# ClientSuccess needs "analytics"; CustomerSuccessBox names no category (gets everything).
CONSENTED = [replace(DESTS[0], consent=frozenset({"analytics"})), DESTS[1]]


def names(w: World, dest: str) -> list[str]:
    return [d.request.path.rsplit("/", 1)[1] for d in w.sent_to(dest)]


def test_a_call_that_does_not_grant_the_category_reaches_only_the_others():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}, context=ANALYTICS), CONSENTED)
    result = w.feed(msg("track", event="Denied", context=NO_ANALYTICS), CONSENTED)
    assert result.denied == [cs.KEY] and not result.held and not result.skipped
    w.feed(msg("track", event="Silent"), CONSENTED)  # no consent object: not filtered
    w.feed(msg("track", event="Granted", context=ANALYTICS), CONSENTED)
    assert names(w, cs.KEY) == ["Silent", "Granted"]
    assert [d.request.json["event"] for d in w.sent_to(csb.KEY) if "event" in d.request.json] == [
        "Denied",
        "Silent",
        "Granted",
    ]


def test_consent_is_judged_before_the_integrations_object():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}), CONSENTED)
    forced = msg("track", event="Forced", context=NO_ANALYTICS, integrations={"ClientSuccess": True})
    assert w.feed(forced, CONSENTED).denied == [cs.KEY]
    assert names(w, cs.KEY) == []


def test_a_held_call_keeps_its_verdict_at_arrival():
    w = World()
    w.feed(msg("track", event="Early", context=ANALYTICS), CONSENTED)  # held: no group yet
    w.feed(msg("track", event="Kept", context=NO_ANALYTICS), CONSENTED)  # never held for ClientSuccess
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}), CONSENTED)
    assert names(w, cs.KEY) == ["Early"]


def test_traits_a_denied_identify_brought_never_reach_that_destination():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}), CONSENTED)
    w.feed(msg("identify", traits={"email": "old@example.com"}, context=ANALYTICS), CONSENTED)
    w.feed(msg("identify", traits={"email": "new@example.com", "firstName": "Ann"}, context=NO_ANALYTICS), CONSENTED)
    w.feed(msg("track", event="After", context=ANALYTICS), CONSENTED)
    user = w.sent_to(cs.KEY)[-1].request.json["identity"]["user"]
    assert user.get("email") == "old@example.com" and "Ann" not in str(user)
    # the other destination sees what it was sent
    assert w.users["u1"].traits["email"] == "new@example.com"
    # a call ClientSuccess may receive that brings the trait shows it from then on
    w.feed(msg("identify", traits={"email": "new@example.com"}, context=ANALYTICS), CONSENTED)
    w.feed(msg("track", event="Later", context=ANALYTICS), CONSENTED)
    assert w.sent_to(cs.KEY)[-1].request.json["identity"]["user"]["email"] == "new@example.com"


def test_a_group_a_denied_call_joined_or_named_stays_unseen():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}, context=ANALYTICS), CONSENTED)
    w.feed(msg("group", groupId="globex", traits={"name": "Globex"}, context=NO_ANALYTICS), CONSENTED)
    w.feed(msg("track", event="Where", context=ANALYTICS), CONSENTED)
    assert w.sent_to(cs.KEY)[-1].request.json["identity"]["organization"] == {"id": "acme", "name": "Acme"}
    # renaming a group in a denied call: ClientSuccess keeps the name it was given
    w.feed(msg("group", groupId="acme", traits={"name": "Acme Secret"}, context=NO_ANALYTICS, userId="u2"), CONSENTED)
    w.feed(msg("track", event="Again", context=ANALYTICS), CONSENTED)
    assert w.sent_to(cs.KEY)[-1].request.json["identity"]["organization"]["name"] == "Acme"


def test_the_records_round_trip_with_their_withheld_views():
    w = World()
    w.feed(msg("identify", traits={"plan": "pro"}, context=NO_ANALYTICS), CONSENTED)
    user = w.users["u1"]
    assert user.withheld and UserState.from_dict(user.to_dict()) == user
    group = GroupState("acme", name="Acme", withheld={"clientsuccess": {"t": {"name": []}}})
    assert GroupState.from_dict(group.to_dict()) == group
    assert "withheld" not in UserState("u2").to_dict()  # absent when empty: older records unchanged
