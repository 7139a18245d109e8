"""Events waiting per destination and state (held, releasing, parked), for `/status`
and `/metrics`: counted over `pending` index rows (`pending_counts`), or kept up to
date as the runtime writes them (`PendingCounts`), so that a scrape reads a few numbers
instead of decoding the pending table on the event loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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


class PendingCounts:
    """`pending_counts` kept up to date instead of recomputed: the runtime tells it every
    pending record it writes (`Runtime.store_pending`, and the retry rescan that reads
    the records of newly assigned partitions) and forgets the users of partitions that
    went elsewhere, so `/status` and `/metrics` read a few numbers instead of decoding
    the whole pending table on the event loop at every scrape."""

    def __init__(self) -> None:
        self._users: dict[str, dict[tuple[str, str], int]] = {}
        self._totals: Counter[tuple[str, str]] = Counter()

    def update(self, user: str, pending: Pending) -> None:
        counts = {
            (dest, state): n
            for dest, queue in pending.queues.items()
            for state in PENDING_STATES
            if (n := len(getattr(queue, state, ())))
        }
        self._totals.subtract(self._users.pop(user, {}))
        self._totals.update(counts)
        if counts:
            self._users[user] = counts

    def forget(self, lost: Callable[[str], bool]) -> None:
        """Drop the users for which `lost(user)` (their partition went elsewhere)."""
        for user in [u for u in self._users if lost(u)]:
            self._totals.subtract(self._users.pop(user))

    def counts(self) -> dict[str, dict[str, int]]:
        """destination -> state -> events, as `pending_counts` gives them."""
        out: dict[str, dict[str, int]] = {}
        for (dest, state), n in self._totals.items():
            if n:
                out.setdefault(dest, dict.fromkeys(PENDING_STATES, 0))[state] = n
        return out
