"""streams.ops.console.journal: what the console keeps of a worker's recent work stays
within its byte bounds, whatever the lengths of the keys and ids it is told."""

from __future__ import annotations

from types import SimpleNamespace

from streams.ops.console import journal as jm
from streams.ops.console.journal import Journal

NOW = 1_765_000_000.0


def test_the_journal_is_bounded_by_bytes_as_well_as_by_count():
    journal = Journal()
    long_id = "m" * 2000  # a messageId as long as a client makes it
    for n in range(6000):
        journal.delivery(f"user-{n}", "clientsuccess", f"{long_id}{n}", "done", 200, NOW)
        assert journal._deliveries.bytes <= jm.DELIVERIES_MAX_BYTES
    assert len(journal._deliveries) < jm.USERS_WITH_DELIVERIES  # bytes, not the count, bound it
    assert journal.deliveries("user-5999")[0].message_id == f"{long_id}5999"  # the newest stay
    assert journal.deliveries("user-0") == []
    group = SimpleNamespace(type="group", group_id=None)
    for n in range(200_000):  # 5,000 groups x 200 members by count: about 200 MB
        msg = SimpleNamespace(type="group", group_id=f"g{n % 5000}") if n % 2 else group
        journal.routed(f"user-with-a-long-key-{n:012d}", msg, SimpleNamespace(group_id=f"g{n % 5000}"), None, NOW)
    assert 0 < journal.groups.bytes <= jm.GROUPS_MAX_BYTES
    assert journal.users_in_group("g4999")  # the most recent groups stay


def test_a_users_recent_deliveries_count_their_bytes_as_they_come_and_go():
    journal = Journal(per_user=3)
    for n in range(10):
        journal.delivery("u1", "clientsuccess", "x" * (n + 1), "done", 200, NOW)
    kept = journal.deliveries("u1")
    assert [len(d.message_id) for d in kept] == [10, 9, 8]
    expected = jm.RING_BYTES + sum(jm._delivery_bytes(d) for d in kept)
    assert journal._deliveries.size("u1") == expected
