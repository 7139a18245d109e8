"""Events waiting per destination and state (held, releasing, parked), for `/status`
and `/metrics`: counted over `pending` index rows (`pending_counts`), or kept up to
date as the runtime writes them (`PendingCounts`), so that a scrape reads a few numbers
instead of decoding the pending table on the event loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from streams.core.pending import Pending
from streams.core.pendingrows import index_only
from streams.core.versions import Readable

PENDING_STATES = ("held", "releasing", "parked")


def pending_counts(records: Iterable[Mapping[str, Any] | None]) -> dict[str, dict[str, int]]:
    """Events waiting per destination over `pending` table values: held (not yet
    attributable), releasing (sent, not yet confirmed) and parked (a delivery that
    failed in a retryable way, waiting for its next retry). Records this version
    cannot read (a newer worker's, mid-upgrade) are left out rather than failing."""
    out: dict[str, dict[str, int]] = {}
    for _, pending in Readable(index_only).each(enumerate(records)):
        for dest, queue in pending.queues.items():
            counts = out.setdefault(dest, dict.fromkeys(PENDING_STATES, 0))
            for state in PENDING_STATES:
                counts[state] += len(getattr(queue, state, ()))
    return out


Counts = dict[tuple[str, str], int]  # (destination, state) -> events


def counted(pending: Pending) -> Counts:
    return {
        (dest, state): n
        for dest, queue in pending.queues.items()
        for state in PENDING_STATES
        if (n := len(getattr(queue, state, ())))
    }


class PendingCounts:
    """`pending_counts` kept up to date instead of recomputed, so that `/status` and
    `/metrics` read a few numbers instead of decoding the whole pending table on the
    event loop at every scrape.

    It keeps totals per by-user partition, nothing per user (an outage parks every
    active user's deliveries: an entry per user grew with them). The runtime tells it
    each pending record it writes, with the record it replaces (`written`); a partition
    newly assigned is counted by the retry rescan (`scan_begins`, `scanned` for each row
    it reads, in chunks, `scan_ends`), while its users' records are being written. Then
    a user written before the scan reads its row is counted as its row was before that
    first write, and the writes' changes on top; that needs, per partition being
    scanned, the users written since the scan began (`_first`, dropped when it ends:
    bounded by the writes of the scan's duration). A scan begun again (a new assignment
    stopped it) starts from the writes alone."""

    def __init__(self) -> None:
        self._totals: dict[int, Counter[tuple[str, str]]] = {}
        self._owned: set[int] = set()
        # Partitions assigned and not yet counted by a whole scan: the users written since
        # the assignment -> (their counts before their first write, their counts now).
        self._first: dict[int, dict[str, tuple[Counts, Counts]]] = {}

    def written(self, partition: int, user: str, before: Pending, after: Pending) -> None:
        old, new = counted(before), counted(after)
        totals = self._totals.setdefault(partition, Counter())
        totals.subtract(old)
        totals.update(new)
        first = self._first.get(partition)
        if first is not None:
            first[user] = (first[user][0] if user in first else old, new)

    def assigned(self, partitions: Iterable[int]) -> None:
        """A rebalance gave this worker `partitions`: those it had already stay counted;
        those that went are dropped; the new ones wait for the rescan (their rows were
        restored from the changelog, and this worker knows nothing of them)."""
        owned = set(partitions)
        for partition in [p for p in self._totals if p not in owned]:
            del self._totals[partition]
        for partition in [p for p in self._first if p not in owned]:
            del self._first[partition]
        for partition in owned - self._owned:
            self._totals[partition] = Counter()
            self._first[partition] = {}
        self._owned = owned

    def scan_begins(self, partition: int) -> None:
        first = self._first.get(partition)
        if first is None:
            return  # counted already (it stayed through the rebalance)
        totals = self._totals[partition] = Counter()
        for old, new in first.values():
            totals.subtract(old)
            totals.update(new)

    def scanned(self, partition: int, user: str, pending: Pending) -> None:
        first = self._first.get(partition)
        if first is None:
            return
        kept = first.get(user)
        # Written since the assignment: its row before that first write (the changes on
        # top are counted already), whenever the scan reads it.
        self._totals[partition].update(kept[0] if kept is not None else counted(pending))

    def scan_ends(self, partition: int) -> None:
        self._first.pop(partition, None)

    def counts(self) -> dict[str, dict[str, int]]:
        """destination -> state -> events, as `pending_counts` gives them."""
        out: dict[str, dict[str, int]] = {}
        for totals in self._totals.values():
            for (dest, state), n in totals.items():
                if n:
                    out.setdefault(dest, dict.fromkeys(PENDING_STATES, 0))[state] += n
        return out
