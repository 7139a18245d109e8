"""The counts of waiting events for /status and /metrics (streams.core.pendingcounts) keep
a few numbers per partition, not an entry per waiting user: their memory does not grow
with the users (an outage parks every active user's deliveries: a million users were a
few hundred MB). A newly assigned partition is counted by the retry rescan, in chunks,
while its users' records are written: a user written before its row is read counts
what the scan reads once, with the writes' changes on top; an interrupted scan starts
the partition again without counting a row twice."""

from __future__ import annotations

import asyncio
import sys

from streams.core.pending import Item, Pending, Queue
from streams.core.pendingcounts import PendingCounts, pending_counts
from streams.runtime import retries
from tests.runtime_world import PARTITIONS, World


def held(n: int) -> Pending:
    """A pending record with `n` held ClientSuccess calls."""
    items = tuple(Item(s, 0.0, "{}") for s in range(1, n + 1))
    return Pending(n + 1, {"clientsuccess": Queue(held=items)} if n else {})


def test_the_counts_keep_nothing_per_user():
    counts = PendingCounts()
    counts.assigned({0})
    counts.scan_ends(0)
    before = sys.getsizeof(counts.__dict__) + sum(sys.getsizeof(v) for v in counts.__dict__.values())
    for n in range(20_000):
        counts.written(0, f"user-{n}", Pending(), held(1))
    after = sys.getsizeof(counts.__dict__) + sum(sys.getsizeof(v) for v in counts.__dict__.values())
    assert counts.counts()["clientsuccess"]["held"] == 20_000
    assert after - before < 1_000  # nothing per user (it was 20,000 entries)


def test_a_partition_being_scanned_counts_each_row_once_whatever_the_order_of_writes_and_reads():
    counts = PendingCounts()
    counts.assigned({0, 1})
    # partition 0: a (2 held), b (1 held), c (none) in the table when it is assigned
    counts.scan_begins(0)
    counts.scanned(0, "a", held(2))  # read before its write
    counts.written(0, "a", held(2), held(3))
    counts.written(0, "b", held(1), held(4))  # written before its row is read
    counts.written(0, "b", held(4), held(5))
    counts.scanned(0, "b", held(5))
    counts.written(0, "c", Pending(), held(1))  # a new row
    counts.scanned(0, "c", held(1))
    assert counts.counts()["clientsuccess"]["held"] == 3 + 5 + 1
    counts.scan_ends(0)
    counts.written(0, "a", held(3), Pending())
    assert counts.counts()["clientsuccess"]["held"] == 5 + 1


def test_an_interrupted_scan_starts_its_partition_again_without_counting_twice():
    counts = PendingCounts()
    counts.assigned({0})
    counts.scan_begins(0)
    counts.scanned(0, "a", held(2))
    counts.written(0, "b", held(1), held(2))
    # a new assignment: the next tick scans again, from the start
    counts.assigned({0})
    counts.scan_begins(0)
    counts.scanned(0, "a", held(2))
    counts.scanned(0, "b", held(2))
    counts.scan_ends(0)
    assert counts.counts()["clientsuccess"]["held"] == 4
    counts.scan_begins(0)  # a rescan of a partition counted already: nothing changes
    counts.scanned(0, "a", held(2))
    counts.scan_ends(0)
    assert counts.counts()["clientsuccess"]["held"] == 4


def test_a_partition_that_went_elsewhere_is_not_counted_and_one_that_came_back_is_counted_again():
    counts = PendingCounts()
    counts.assigned({0, 1})
    for p in (0, 1):
        counts.scan_begins(p)
        counts.scanned(p, f"u{p}", held(p + 1))
        counts.scan_ends(p)
    assert counts.counts()["clientsuccess"]["held"] == 3
    counts.assigned({0})
    assert counts.counts()["clientsuccess"]["held"] == 1
    counts.assigned({0, 1})  # back: its rows may have changed meanwhile; the rescan counts them
    assert counts.counts()["clientsuccess"]["held"] == 1
    counts.scan_begins(1)
    counts.scanned(1, "u1", held(7))
    counts.scan_ends(1)
    assert counts.counts()["clientsuccess"]["held"] == 8


async def test_the_worker_s_counts_match_the_table_after_a_rescan_with_writes_in_between(monkeypatch):
    monkeypatch.setattr(retries, "RESCAN_CHUNK", 3)
    world = World()
    for n in range(40):  # held calls (no group) of 40 users
        await world.publish(type="track", userId=f"u{n}", event="E", messageId=f"m{n}")
    world.rt.assigned(set(range(PARTITIONS)))  # as after a restart: counted again by the rescan
    scan = asyncio.ensure_future(retries.tick(world.rt))
    for n in range(0, 40, 3):  # more calls while the rescan reads the rows
        await world.publish(type="track", userId=f"u{n}", event="F", messageId=f"n{n}")
    await asyncio.wait_for(scan, 5.0)
    assert world.rt.rows.pending_counts.counts() == pending_counts(world.tables.pending.values())
    assert world.rt.rows.pending_counts.counts()["clientsuccess"]["held"] == 40 + 14
