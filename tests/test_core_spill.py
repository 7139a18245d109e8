"""The spill queue's pure part (streams.core.spill): the share rule, the rows and their
bounds, confirmations."""

from __future__ import annotations

import json

import pytest

from streams.core import control, spill
from streams.core.decision import PartnerRequest
from streams.core.outcome import Dispatch
from streams.core.pendingrows import INDEX_MAX_BYTES
from streams.core.spill import SpillDone, SpillQueue


def test_a_user_spills_past_its_share_and_keeps_spilling_while_it_has_spilled_ones():
    rule = dict(share=4, max_events=10)
    assert not spill.should_spill(3, 0, **rule)  # under its share: in memory
    assert spill.should_spill(4, 0, **rule)  # at its share: spilled
    assert spill.should_spill(0, 1, **rule)  # room again, but spilled ones go first: order
    assert not spill.should_spill(9, 10, **rule)  # the spill queue is full: in memory, as before
    assert not spill.should_spill(99, 0, share=4, max_events=0)  # 0 turns spilling off


def test_the_queue_counts_from_first_to_next_and_its_row_reads_back():
    q = SpillQueue().appended().appended().appended()
    assert q.size == 3 and q.popped() == SpillQueue(1, 3)
    assert spill.first_of(q.popped().row()) == 1 and spill.first_of(None) == 0
    assert SpillQueue().popped() == SpillQueue()
    with pytest.raises(ValueError):
        spill.first_of({"v": 99, "first": 0})


@pytest.mark.parametrize("first, length", [(0, 0), (0, 1), (5, 2), (3, 17), (0, 1000), (7, 20_000)])
def test_the_queue_ends_where_its_order_rows_end_found_in_a_few_reads(first, length):
    rows = set(range(first, first + length))
    reads: list[int] = []

    def exists(ordinal: int) -> bool:
        reads.append(ordinal)
        return ordinal in rows

    assert spill.probe_next(first, exists) == first + length
    assert len(reads) <= 2 * max(1, length).bit_length() + 2


def test_the_index_row_is_small_whatever_the_queue_s_length():
    worst = spill.worst_index_bytes()
    assert worst < 100 < INDEX_MAX_BYTES
    long = SpillQueue(0, spill.MAX_EVENTS_BOUND * 1000)
    assert len(json.dumps(long.row(), separators=(",", ":"))) <= worst


def test_a_body_row_carries_the_delivery_and_gives_it_back_under_its_number():
    request = PartnerRequest("POST", "https://api.example.com/v1/track", {"event": "opened"}, {"X": "1"})
    item = Dispatch("clientsuccess", request, '{"type":"track"}', {"topic": "t", "offset": 3}, "m-1", seq=3 << 20)
    row = spill.body_row(item, 7)
    assert row["n"] == 7 and spill.body_fits(row)
    assert spill.dispatch_of(json.loads(json.dumps(row)), "clientsuccess", 3 << 20) == item
    assert not spill.body_fits(row, max_bytes=10)


def test_confirmations_drop_the_head_in_order_and_once():
    seqs = {0: 10, 1: 20, 2: 30}
    q = SpillQueue(0, 3)
    q2, dropped = spill.confirm(q, seqs.get, [20, 10])
    assert q2 == SpillQueue(2, 3) and dropped == [(0, 10), (1, 20)]
    again, none = spill.confirm(q2, seqs.get, [20, 10])  # applied twice: nothing changes
    assert again == q2 and none == []
    # A number not at the head waits (its head was not confirmed yet).
    assert spill.confirm(q, seqs.get, [30]) == (q, [])
    # A head whose order row is missing is dropped with the next confirmation.
    assert spill.confirm(q, {1: 20, 2: 30}.get, [20]) == (SpillQueue(2, 3), [(0, None), (1, 20)])


def test_spill_done_records_are_bounded_and_keep_the_order():
    seqs = list(range(2500))
    records = spill.done_records("webhooks", seqs, max_seqs=1000)
    assert [len(r.seqs) for r in records] == [1000, 1000, 500]
    assert [s for r in records for s in r.seqs] == seqs
    longest = SpillDone("clientsuccess", ((1 << 63) - 1,) * spill.DONE_MAX_SEQS)
    value, headers = control.encode(longest)
    assert len(value) < 64 * 1024 and control.decode(headers, value) == longest


def test_keys_name_their_user_and_index_and_order_rows_their_queue():
    assert spill.queue_of(spill.index_key('u"1', "webhooks")) == ('u"1', "webhooks")
    assert spill.queue_of(spill.order_key("u1", "webhooks", 4)) == ("u1", "webhooks")
    assert spill.queue_of('[1, "webhooks"]') is None
    assert spill.queue_of("not json") is None
    assert spill.user_of(spill.order_key("u1", "webhooks", 4)) == "u1"
    assert spill.user_of(spill.body_key("u1", "webhooks", 4)) == "u1"


def test_a_released_event_is_spilled_under_its_number_in_releasing_and_comes_back_released():
    request = PartnerRequest("POST", "/e", {"n": 1})
    released = Dispatch("clientsuccess", request, "{}", {}, "m", released_seq=5 << 20)
    call = Dispatch("clientsuccess", request, "{}", {}, "m", seq=6 << 20)
    assert spill.number_of(released) == 5 << 20 and spill.number_of(call) == 6 << 20
    assert spill.number_of(Dispatch("clientsuccess", request, "{}", {}, "m")) is None
    assert spill.dispatch_of(spill.body_row(released, 0), "clientsuccess", 5 << 20) == released
    assert spill.dispatch_of(spill.body_row(call, 1), "clientsuccess", 6 << 20) == call
