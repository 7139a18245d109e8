"""The per-message step: state, holding, releasing in order, bounds and switches."""

from functools import partial

from streams.core.decision import Hold, Reject, Skip
from streams.core.destination import Destination
from streams.core.pending import Item, Pending, Queue, confirm
from streams.core.releasing import resend_releasing, resolve_releasing
from streams.core.state import GroupState
from streams.core.step import merge_step, step
from streams.destinations.clientsuccess import mapping as cs
from streams.destinations.clientsuccess.settings import ClientSuccessSettings
from streams.destinations.customersuccessbox import mapping as csb
from streams.destinations.customersuccessbox.memory import MEMORY
from streams.destinations.customersuccessbox.settings import CustomerSuccessBoxSettings
from tests.factories import msg, raw

DESTS = [
    Destination(cs.KEY, cs.NAME, partial(cs.decide, ClientSuccessSettings(source_id="src"))),
    Destination(csb.KEY, csb.NAME, partial(csb.decide, CustomerSuccessBoxSettings())),
]
MEMORIES = [MEMORY]


class World:
    """The tables of one partition as plain dicts, driven through `step`."""

    def __init__(self, max_pending=1000, max_age=3600.0):
        self.users, self.pending, self.groups = {}, {}, {}
        self.sent, self.dead = [], []
        self.max_pending, self.max_age = max_pending, max_age
        self.now = 1_000_000.0

    def feed(self, m, dests=DESTS):
        result = step(
            m.key,
            m,
            raw(m),
            {"topic": "t", "partition": 0, "offset": 1},
            self.users.get(m.key),
            self.pending.get(m.key, Pending()),
            self.groups.get,
            dests,
            now=self.now,
            now_iso="2026-11-22T00:00:00+00:00",
            max_pending=self.max_pending,
            max_pending_age=self.max_age,
            memories=MEMORIES,
        )
        self.users[m.key] = result.user
        self.pending[m.key] = result.pending
        if result.group:
            self.groups[result.group.group_id] = result.group
        self.sent += result.dispatches
        self.dead += result.dead_letters
        return result

    def sent_to(self, dest):
        return [d for d in self.sent if d.destination == dest]


def test_events_before_group_are_held_then_released_in_order_after_it():
    w = World()
    w.feed(msg("track", event="First"))
    w.feed(msg("page", name="Second"))
    assert w.sent_to(cs.KEY) == []
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    names = [d.request.path.rsplit("/", 1)[1] for d in w.sent_to(cs.KEY)]
    assert names == ["First", "Viewed%20Second%20Page"]
    assert all(d.request.json["identity"]["organization"] == {"id": "acme", "name": "Acme"} for d in w.sent_to(cs.KEY))
    released = [d.released_seq for d in w.sent_to(cs.KEY)]
    assert released == sorted(released) and None not in released


def test_an_attributable_event_waits_behind_held_ones():
    w = World()
    w.groups["globex"] = GroupState("globex", name="Globex")
    w.feed(msg("track", event="Early"))
    w.feed(msg("track", event="Named", context={"groupId": "globex"}))
    assert w.sent_to(cs.KEY) == []  # would overtake "Early" otherwise
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    assert [d.request.path.rsplit("/", 1)[1] for d in w.sent_to(cs.KEY)] == ["Early", "Named"]


def test_released_events_stay_until_confirmed_and_are_resent_after_a_restart():
    w = World()
    w.feed(msg("track", event="Early"))
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    pending = w.pending["u1"]
    (item,) = pending.queue(cs.KEY).releasing
    # a fresh process carries nothing: the released event is sent again
    again = resend_releasing(pending, DESTS, w.users["u1"], w.groups.get, lambda d, s: False)
    assert [d.released_seq for d in again if d.destination == cs.KEY] == [item.seq]
    # while this process carries it, it is not sent twice
    assert resend_releasing(pending, DESTS, w.users["u1"], w.groups.get, lambda d, s: True) == []
    assert confirm(pending, cs.KEY, item.seq).queue(cs.KEY).releasing == ()


def test_confirming_a_released_event_keeps_those_released_around_it_whatever_their_numbers():
    # A visitor's adopted events go first but are numbered after the user's own (from
    # the hand-over record), so released numbers are not in order: a confirmation
    # forgets its own event only, never one whose delivery has not finished.
    own = Item(5, 0.0, raw(msg("track", event="Own")))
    adopted = Item(9_000, 0.0, raw(msg("track", event="Adopted")))
    later = Item(7, 0.0, raw(msg("track", event="Later")))
    pending = Pending().with_queue(cs.KEY, Queue(releasing=(adopted, own, later)))
    assert confirm(pending, cs.KEY, adopted.seq).queue(cs.KEY).releasing == (own, later)
    assert confirm(pending, cs.KEY, own.seq).queue(cs.KEY).releasing == (adopted, later)
    assert confirm(pending, cs.KEY, 6).queue(cs.KEY).releasing == (adopted, own, later)  # not there: unchanged


def test_pending_count_bound_dead_letters_the_oldest():
    w = World(max_pending=2)
    for i in range(4):
        w.feed(msg("track", event=f"E{i}"))
    overflow = [d for d in w.dead if d.reason == "pending_overflow" and d.destination == cs.KEY]
    assert [d.raw for d in overflow] and '"E0"' in overflow[0].raw and '"E1"' in overflow[1].raw
    assert len(w.pending["u1"].queue(cs.KEY).held) == 2


def test_pending_age_bound_dead_letters_expired_events():
    w = World(max_age=60)
    w.feed(msg("track", event="Old"))
    w.now += 61
    w.feed(msg("identify", traits={"firstName": "A"}))
    assert [d.reason for d in w.dead if d.destination == cs.KEY] == ["pending_expired"]
    assert not w.pending["u1"].queue(cs.KEY).held


def test_integrations_switches():
    w = World()
    w.feed(msg("group", groupId="acme", traits={"name": "Acme", "account_id": "A"}))
    w.sent.clear()
    w.feed(msg("track", event="OnlyCSB", integrations={"All": False, "CustomerSuccessBox": True}))
    w.feed(msg("track", event="NotCS", integrations={"ClientSuccess": False}))
    assert [d.request.json["event"] for d in w.sent_to(csb.KEY)] == ["OnlyCSB", "NotCS"]
    assert w.sent_to(cs.KEY) == []


def test_group_without_name_is_dead_lettered_for_clientsuccess_only():
    w = World()
    result = w.feed(msg("group", groupId="g1", traits={"plan": "pro"}))
    assert [(d.reason, d.destination) for d in result.dead_letters] == [("group_without_name", cs.KEY)]
    assert [d.request.path for d in w.sent_to(csb.KEY)] == ["/api_js/v1_1/account"]


def test_screen_is_skipped_by_both():
    w = World()
    result = w.feed(msg("screen", name="Home"))
    assert sorted(d for d, _ in result.skipped) == sorted([cs.KEY, csb.KEY])


def test_csb_events_wait_for_an_account_from_identify():
    w = World()
    w.feed(msg("track", event="Early"))
    assert w.sent_to(csb.KEY) == []
    w.feed(msg("identify", traits={"account_id": "A1", "user_id": "u@x"}))
    # Order per user per destination is kept: the identify queues behind the held
    # track, and once the account is known both go out in arrival order.
    assert [(d.request.path, d.request.json["accountId"]) for d in w.sent_to(csb.KEY)] == [
        ("/api_js/v1_1/track", "A1"),
        ("/api_js/v1_1/identify", "A1"),
    ]


def test_anonymous_early_pages_are_attributed_after_login():
    w = World()
    w.feed(msg("page", user=None, anonymousId="anon-1", name="Pricing"))
    assert w.sent == [] and w.pending["anon-1"].queue(cs.KEY).held
    w.feed(msg("group", groupId="acme", traits={"name": "Acme", "account_id": "A1"}))
    login = w.feed(msg("alias", previousId="anon-1"))
    assert login.merge_from == "anon-1" and "anon-1" in w.users["u1"].anonymous_ids
    # the anonymous partition hands its profile over; the user's partition folds it in
    result = merge_step(
        w.users["u1"], w.pending["u1"], w.users["anon-1"], w.pending["anon-1"], "anon-1", w.groups.get, DESTS
    )
    sent = {(d.destination, d.request.path) for d in result.dispatches}
    assert (cs.KEY, "/collector/1.0.0/projects/src/events/Viewed%20Pricing%20Page") in sent
    assert (csb.KEY, "/api_js/v1_1/page") in sent
    assert all(d.request.json.get("accountId", "A1") == "A1" for d in result.dispatches)


def test_identify_with_both_ids_asks_for_a_merge_until_the_profile_came():
    from dataclasses import replace

    w = World()
    first = w.feed(msg("identify", anonymousId="anon-2", traits={"email": "a@x"}))
    # still awaited (the request may have been lost in a crash): asked again, harmlessly
    again = w.feed(msg("identify", anonymousId="anon-2", traits={"email": "a@x"}))
    assert first.merge_from == "anon-2" and again.merge_from == "anon-2"
    assert again.user.anonymous_ids == ("anon-2",) and again.user.merging_since == first.user.merging_since
    w.users["u1"] = replace(w.users["u1"], merging=None, merging_since=None)  # the profile came
    assert w.feed(msg("identify", anonymousId="anon-2", traits={"email": "a@x"})).merge_from is None


def test_merge_keeps_the_users_newer_traits_and_fills_gaps():
    from streams.core.reducers import merge_users
    from streams.core.state import UserState

    user = UserState("u1", user_id="u1", traits={"email": "new@x"})
    anon = UserState("anon", traits={"email": "old@x", "firstName": "Al"}, group_id="acme", groups=("acme",))
    merged = merge_users(user, anon, "anon")
    assert merged.traits == {"email": "new@x", "firstName": "Al"} and merged.group_id == "acme"
    assert merged.anonymous_ids == ("anon",)


def test_a_destinations_own_reject_reason_reaches_the_dead_letter_as_it_is():
    """A new destination's reject reasons need no edit of the shared enum."""
    own = Destination("own", "Own", lambda m, u, g: Reject("own_rule", "the destination's rule refuses it"))
    w = World()
    result = w.feed(msg("track", event="E"), dests=[own])
    assert [(d.reason, d.destination, d.stage) for d in result.dead_letters] == [("own_rule", "own", "routing")]


def test_released_events_the_rules_no_longer_send_are_held_again_refused_or_skipped():
    """Issue 22, finding 8: decided again after a restart, a released event leaves
    `releasing` as the destination's rules now say: held again (first in line), dead-
    lettered when refused, skipped otherwise; never left there for good."""
    w = World()
    w.feed(msg("track", event="Early"))
    w.feed(msg("group", groupId="acme", traits={"name": "Acme"}))
    pending = w.pending["u1"]
    (item,) = pending.queue(cs.KEY).releasing
    later = Item(99, 1.0, raw(msg("track", event="Late")))
    pending = pending.with_queue(cs.KEY, Queue(held=(later,), releasing=(item,)))

    def resolve(decision):
        dests = [Destination(cs.KEY, cs.NAME, lambda m, u, g: decision)]
        return resolve_releasing(pending, pending, dests, w.users["u1"], w.groups.get, lambda d, s: False)

    held = resolve(Hold("no group now"))
    assert held.pending.queue(cs.KEY) == Queue(held=(item, later))
    assert held.dispatches == held.dead_letters == held.skipped == []
    refused = resolve(Reject("group_without_name", "no"))
    assert refused.pending.queue(cs.KEY).releasing == ()
    assert [d.ident for d in refused.dead_letters] == [f"{cs.KEY}#{item.seq}"]
    skipped = resolve(Skip("denied"))
    assert skipped.pending.queue(cs.KEY).releasing == () and len(skipped.skipped) == 1 and not skipped.dead_letters
