"""Consent as Segment enforces it (streams.core.consent): which calls reach a destination
that names categories, and what a destination denied a call may still see of the
traits that call brought."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import consent
from streams.core.consent import WITHHELD_MAX_BYTES, after_call, allows, denied, group_seen, view_traits


@dataclass(frozen=True)
class Dest:
    key: str
    consent: frozenset[str] = frozenset()


def ctx(**prefs) -> dict:
    return {"consent": {"categoryPreferences": prefs}}


def test_segments_rules():
    needs = ["analytics"]
    assert allows({}, needs)  # no consent object: not filtered
    assert allows({"consent": None}, needs)
    assert allows(ctx(analytics=True), needs)
    assert not allows(ctx(), needs)  # empty preferences
    assert not allows(ctx(advertising=True), needs)  # the category missing
    assert not allows(ctx(analytics=False), needs)
    assert not allows(ctx(analytics="yes"), needs)  # only true grants
    assert not allows({"consent": {"categoryPreferences": "all"}}, needs)
    assert not allows({"consent": {}}, needs)
    assert allows(ctx(analytics=False), [])  # a destination naming no category gets everything
    both = ["analytics", "advertising"]
    assert allows(ctx(analytics=True, advertising=True), both)
    assert not allows(ctx(analytics=True, advertising=False), both)  # all of them, not any


def test_denied_names_the_destinations_a_call_may_not_reach():
    dests = [Dest("a", frozenset({"analytics"})), Dest("b"), Dest("c", frozenset({"advertising"}))]
    assert denied(ctx(analytics=True), dests) == {"c"}
    assert denied({}, dests) == frozenset()
    assert consent.watched(dests) == {"a", "c"}


def test_a_denied_destination_keeps_seeing_what_it_saw():
    watching = frozenset({"a"})
    w = after_call({}, {"plan": "free"}, {"plan": "pro", "email": "x@y"}, frozenset({"a"}), watching)
    assert view_traits({"plan": "pro", "email": "x@y"}, w["a"]) == {"plan": "free"}
    # another denied call does not move what "a" saw
    w = after_call(w, {"plan": "pro", "email": "x@y"}, {"plan": "max", "email": "x@y"}, frozenset({"a"}), watching)
    assert view_traits({"plan": "max", "email": "x@y"}, w["a"]) == {"plan": "free"}
    # a call "a" receives shows it what that call changed, and only that
    w = after_call(w, {"plan": "max", "email": "x@y"}, {"plan": "max", "email": "z@y"}, frozenset(), watching)
    assert view_traits({"plan": "max", "email": "z@y"}, w["a"]) == {"plan": "free", "email": "z@y"}
    w = after_call(w, {"plan": "max", "email": "z@y"}, {"plan": "team", "email": "z@y"}, frozenset(), watching)
    assert w == {}
    # a call "a" receives that brings a value a denied call had set already shows it too
    w = after_call({}, {}, {"plan": "pro"}, frozenset({"a"}), watching)
    w = after_call(w, {"plan": "pro"}, {"plan": "pro"}, frozenset(), watching, brought=["plan"])
    assert view_traits({"plan": "pro"}, w.get("a")) == {"plan": "pro"}


def test_the_group_a_denied_call_joined_is_not_seen():
    w = after_call({}, {}, {}, frozenset({"a"}), frozenset({"a"}), group=("acme", "globex"))
    assert group_seen(w.get("a"), "globex") == "acme"
    w2 = after_call({}, {}, {}, frozenset({"a"}), frozenset({"a"}), group=(None, "globex"))
    assert group_seen(w2.get("a"), "globex") is None
    w = after_call(w, {}, {}, frozenset(), frozenset({"a"}), group=("globex", "initech"))
    assert group_seen(w.get("a"), "initech") == "initech"


def test_merging_keeps_the_visitors_withheld_traits_the_user_does_not_override():
    user = {"a": {"t": {"plan": ["free"]}}}
    visitor = {"a": {"t": {"email": [], "plan": ["x"]}}, "b": {"g": []}}
    merged = consent.merge(user, visitor, {"plan": "pro"})
    assert merged == {"a": {"t": {"email": [], "plan": ["free"]}}, "b": {"g": []}}


values = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "x" * 1500]))
calls = st.lists(
    st.tuples(st.dictionaries(st.sampled_from([f"k{i}" for i in range(40)]), values, max_size=8), st.booleans()),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(calls)
def test_a_denied_value_never_shows_and_the_views_stay_bounded(sequence):
    """Whatever the calls, the destination sees no value that only a denied call brought,
    and the record's withheld views stay under their bound."""
    traits: dict = {}
    withheld: dict = {}
    allowed_value: dict = {}  # what the destination may see: the value the last call it received set
    for update, is_denied in sequence:
        after = {**traits, **update}
        denied_to = frozenset({"a"} if is_denied else ())
        withheld = after_call(withheld, traits, after, denied_to, frozenset({"a"}), brought=update)
        if not is_denied:
            allowed_value.update(update)
        traits = after
        seen = view_traits(traits, withheld.get("a"))
        for key, value in seen.items():
            assert allowed_value.get(key) == value, (key, value)
        assert consent.size(withheld) <= WITHHELD_MAX_BYTES
