"""Deduplication by messageId (streams.core.dedupe) and the in-process redelivery guard."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from streams.core import dedupe
from streams.core.dedupe import Seen, Verdict, prune
from streams.core.incoming import Incoming
from streams.runtime import intake
from streams.runtime.acks import Redeliveries
from tests.coretools import dedupe_check as check

DAY = 24 * 3600.0


def test_a_new_id_is_remembered_with_its_offset():
    verdict, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    assert verdict is Verdict.NEW
    assert seen.ids == {"m1": (7, 100.0)}


def test_another_record_with_a_known_id_is_a_duplicate():
    _, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    verdict, after = check(seen, "m1", 9, 200.0, window=DAY, max_ids=10)
    assert verdict is Verdict.DUPLICATE
    assert after.ids == {"m1": (7, 100.0)}  # the original record stays the reference


def test_the_same_record_again_is_a_redelivery_and_is_processed_again():
    _, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    verdict, _ = check(seen, "m1", 7, 150.0, window=DAY, max_ids=10)
    assert verdict is Verdict.REDELIVERED


def test_a_replayed_dead_letter_is_never_a_duplicate():
    _, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    verdict, after = check(seen, "m1", 30, 200.0, window=DAY, max_ids=10, replay=True)
    assert verdict is Verdict.REDELIVERED
    assert after.ids["m1"] == (30, 200.0)


def test_an_id_older_than_the_window_is_new_again_and_old_ids_are_pruned():
    _, seen = check(Seen(), "old", 1, 0.0, window=DAY, max_ids=10)
    verdict, after = check(seen, "old", 2, DAY + 1, window=DAY, max_ids=10)
    assert verdict is Verdict.NEW
    _, after = check(seen, "other", 3, DAY + 1, window=DAY, max_ids=10)
    assert set(after.ids) == {"other"}


def test_max_ids_forgets_the_oldest_first():
    seen = Seen()
    for n in range(5):
        _, seen = check(seen, f"m{n}", n, float(n), window=DAY, max_ids=3)
    assert set(seen.ids) == {"m2", "m3", "m4"}


def test_prune_returns_the_same_record_when_nothing_expired():
    seen = Seen({"a": (1, 10.0)})
    assert prune(seen, 20.0, window=DAY, max_ids=5) is seen
    assert prune(seen, 10.0 + DAY + 1, window=DAY, max_ids=5).ids == {}


def test_the_record_survives_its_changelog_form():
    _, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    assert Seen.from_dict(seen.to_dict()) == seen
    assert Seen.from_dict(None) == Seen()


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 50)), max_size=60))
def test_each_offset_is_routed_at_most_once_per_id_within_the_window(records):
    """Whatever the order, a messageId is routed from one offset only (redeliveries of
    that offset aside), and the record never holds more than max_ids ids."""
    seen = Seen()
    routed: dict[str, int] = {}
    for n, (mid, offset) in enumerate(records):
        verdict, seen = check(seen, mid, offset, float(n), window=DAY, max_ids=4)
        if verdict is not Verdict.DUPLICATE:
            if mid in routed and verdict is Verdict.REDELIVERED:
                assert routed[mid] == offset
            routed[mid] = offset
        assert len(seen.ids) <= 4


def test_redeliveries_spots_offsets_taken_already_until_the_partition_is_revoked():
    guard = Redeliveries()
    tp = ("by-user", 0)

    def first_time(partition: int, offset: int) -> bool:
        taken = [(None, Incoming(b"u", b"{}", {}, "by-user", partition, offset))]
        fresh = bool(intake.first_times(taken, guard.handled_to))
        if fresh:
            guard.handled({taken[0][1].tp: offset + 1})  # registered, as the intake's batch is
        return fresh

    assert [first_time(0, o) for o in (0, 1, 2)] == [True, True, True]
    assert first_time(0, 1) is False  # fetched again before Faust's seek
    assert first_time(1, 1) is True  # partitions are separate
    guard.forget([tp])
    assert first_time(0, 1) is True  # assigned again: from the committed offset


# Replays carry the dead letter's identity (its place in the dead-letter topic): the
# same dead letter replayed twice is routed once (issue 16, item 6).


def test_a_dead_letter_replayed_twice_is_routed_once():
    _, seen = check(Seen(), "m1", 7, 100.0, window=DAY, max_ids=10)
    verdict, seen = check(seen, "m1", 30, 200.0, window=DAY, max_ids=10, replay_of="dlq/2/41")
    assert verdict is Verdict.NEW  # the first replay goes, though m1 was seen
    verdict, again = check(seen, "m1", 55, 300.0, window=DAY, max_ids=10, replay_of="dlq/2/41")
    assert verdict is Verdict.DUPLICATE and again is seen
    assert seen.ids == {"m1": (7, 100.0)}  # the original record stays the reference for m1


def test_a_replay_record_redelivered_is_processed_again_and_other_dead_letters_of_the_id_go():
    _, seen = check(Seen(), "m1", 30, 200.0, window=DAY, max_ids=10, replay_of="dlq/2/41")
    assert check(seen, "m1", 30, 250.0, window=DAY, max_ids=10, replay_of="dlq/2/41")[0] is Verdict.REDELIVERED
    # the same message dead-lettered for another destination is another dead letter
    assert check(seen, "m1", 31, 250.0, window=DAY, max_ids=10, replay_of="dlq/5/3")[0] is Verdict.NEW


def test_replay_identities_survive_encoding_and_are_pruned_like_ids():
    _, seen = check(Seen(), "m1", 30, 0.0, window=DAY, max_ids=10, replay_of="dlq/2/41")
    assert Seen.from_dict(seen.to_dict()) == seen
    assert Seen.from_dict({"v": 1, "ids": {"m1": [1, 0.0]}}).replays == {}  # records written before replays
    pruned = prune(seen, DAY + 1, window=DAY, max_ids=10)
    assert pruned.replays == {} and pruned.empty


@given(st.text(), st.text(), st.booleans())
def test_a_row_key_is_the_json_it_always_was(user, ident, replay):
    """Row keys are in every store and changelog: their bytes never change (the encoder
    is built once, the text is `json.dumps`'s with compact separators)."""
    expected = dedupe.ROW_PREFIX + json.dumps([user, "r" if replay else "m", ident], separators=(",", ":"))
    assert dedupe.row_key(user, ident, replay=replay) == expected
    assert dedupe.user_of(expected) == user
