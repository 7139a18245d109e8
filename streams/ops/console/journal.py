"""What the console shows that the tables do not keep: a worker's recent work, in
bounded memory.

The runtime feeds one `Journal` (through its observer, `streams.ops.observer.OpsObserver`)
with one-line calls where the work happens:

* `delivery()` when a partner answered a delivery or a retry (`senders.deliver`,
  `retries.retry`): the user's recent deliveries, newest first, a few per user for the
  most recently active users;
* `dead_letter()` when this worker sent a dead letter (`effects.dead_letter`): only
  when, so the dead-letters page reads the dead-letter topic again instead of showing
  a reading from before it (the page lists the topic's, every worker's:
  `deadletters.py`);
* `routed()` when a Segment call was routed (`routing.route_call`): which users were
  seen in which group, and which users and groups carry an account id a destination
  remembers (CustomerSuccessBox's `account_id`), so the group page and the search need
  no scan of a table;
* `sample()` every SAMPLE_INTERVAL seconds (a timer): the per-destination counters, for
  the rate chart over the last hour (`rates.py`).

The console itself notes `replayed()`: which dead letters (by identity) were replayed
from this worker's console, and when, for the page to say so.

Everything is bounded by count and, where what is kept grows with the users, by bytes
as well (an estimate: the strings' lengths plus CPython's overhead per entry, measured
with `sys.getsizeof`; the containers: `bounded.py`): the deliveries within DELIVERIES_MAX_BYTES, the group index
within GROUPS_MAX_BYTES, the account index within ACCOUNTS_MAX_BYTES, 20 MB together.
The oldest goes first. (The replays and the samples hold fixed-size entries: their
counts bound their bytes, about 4 MB and 100 KB.)
Counts are this process's: a restart starts empty. Nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, NamedTuple

from streams.ops.console.bounded import LRU, STR_BYTES, Index
from streams.ops.console.rates import CHART_SECONDS, SAMPLES, Sample, rates

USERS_WITH_DELIVERIES = 5000
DELIVERIES_PER_USER = 20
REPLAYS = 5000  # dead letters remembered as replayed from the console
REPLAYS_PER_DEAD_LETTER = 10
GROUPS = 5000
USERS_PER_GROUP = 200
ACCOUNTS = 5000
MEMBERS_PER_ACCOUNT = 50
# Bytes: by count alone the group index could hold 5,000 x 200 members (about 200 MB).
DELIVERIES_MAX_BYTES = 8 * 1024 * 1024
GROUPS_MAX_BYTES = 8 * 1024 * 1024
ACCOUNTS_MAX_BYTES = 4 * 1024 * 1024
RING_BYTES = 730  # an empty deque and its first block (tracemalloc: 724)
DELIVERY_BYTES = 130  # a Delivery before its messageId (a 6-tuple: 88 bytes; 122 as the dataclass it was)

# What a delivery's outcome (streams.core.retry.Outcome values) means to a person.
OUTCOME_WORDS = {"done": "delivered", "retry": "failed, will retry", "fail": "refused"}


class Delivery(NamedTuple):
    """One delivery as the user's page lists it (a tuple: one is made per delivery, and
    a frozen dataclass took 1.6 us to build, a tuple 0.4)."""

    at: float
    destination: str
    message_id: str
    outcome: str  # done, retry, fail
    status: int | None  # the partner's HTTP status; None: no answer
    retry: bool = False  # a retry of a parked delivery

    @property
    def words(self) -> str:
        return OUTCOME_WORDS.get(self.outcome, self.outcome)


class Journal:
    def __init__(
        self,
        *,
        users: int = USERS_WITH_DELIVERIES,
        per_user: int = DELIVERIES_PER_USER,
        replays: int = REPLAYS,
        groups: int = GROUPS,
        per_group: int = USERS_PER_GROUP,
        accounts: int = ACCOUNTS,
        per_account: int = MEMBERS_PER_ACCOUNT,
        samples: int = SAMPLES,
    ) -> None:
        self.per_user = per_user
        self._deliveries = LRU(users, DELIVERIES_MAX_BYTES)
        self.last_dead_letter_at = 0.0  # when this worker last sent one (0: not since it started)
        self._replays = LRU(replays)  # dead-letter identity -> deque of replay times
        self.groups = Index(groups, per_group, GROUPS_MAX_BYTES)  # groupId -> user keys
        self.accounts = Index(accounts, per_account, ACCOUNTS_MAX_BYTES)  # account id -> "user:KEY" / "group:ID"
        self.samples: deque[Sample] = deque(maxlen=samples)

    # ------------------------------------------------------------------ deliveries

    def delivery(
        self,
        key: str,
        destination: str,
        message_id: str,
        outcome: Any,
        status: int | None,
        now: float,
        *,
        retry: bool = False,
    ) -> None:
        kept = self._deliveries.entry(key)
        ring: deque[Delivery]
        if kept is None:
            ring, size = deque(maxlen=self.per_user), RING_BYTES
        else:
            ring, size = kept
        if len(ring) == ring.maxlen:
            size -= _delivery_bytes(ring[-1])  # about to leave the ring
        ring.appendleft(Delivery(now, destination, message_id, getattr(outcome, "value", outcome), status, retry))
        self._deliveries.touch(key, ring, size + _delivery_bytes(ring[0]))

    def deliveries(self, key: str) -> list[Delivery]:
        """The user's recent deliveries, newest first."""
        return list(self._deliveries.get(key) or ())

    # ------------------------------------------------------------------ dead letters

    def dead_letter(self, now: float) -> None:
        """This worker sent a dead letter at `now` (the page reads the dead letters
        themselves from the topic; this only tells its cache to read again)."""
        self.last_dead_letter_at = max(self.last_dead_letter_at, now)

    def replayed(self, identity: str, now: float) -> None:
        """A dead letter (`DeadLetterRecord.identity`) was replayed from this console."""
        times = self._replays.get(identity) or deque(maxlen=REPLAYS_PER_DEAD_LETTER)
        times.append(now)
        self._replays.touch(identity, times)

    def replays(self, identity: str | None) -> list[float]:
        """When this worker's console replayed it, oldest first (bounded)."""
        return list(self._replays.get(identity) or ()) if identity else []

    # ------------------------------------------------------------------ indexes

    def routed(self, key: str, msg: Any, user: Any, group: Any, now: float) -> None:
        """A call of user `key` was routed: `user` is their record after it, `group` the
        group a group call wrote (else None)."""
        for group_id in {
            getattr(user, "group_id", None),
            getattr(msg, "group_id", None) if msg.type == "group" else None,
        }:
            if group_id:
                self.groups.add(group_id, key, now)
        for account in _accounts(getattr(user, "slots", {})):
            self.accounts.add(account, f"user:{key}", now)
        if group is not None:
            for account in _accounts(group.slots):
                self.accounts.add(account, f"group:{group.group_id}", now)

    def users_in_group(self, group_id: str) -> list[tuple[str, float]]:
        return self.groups.members(group_id)

    def with_account(self, account: str) -> list[tuple[str, str, float]]:
        """(kind "user" or "group", id, last seen) carrying `account`."""
        out = []
        for member, at in self.accounts.members(account):
            kind, _, ident = member.partition(":")
            out.append((kind, ident, at))
        return out

    # ------------------------------------------------------------------ rates

    def sample(self, counts: Mapping[str, Mapping[str, int]], now: float) -> None:
        self.samples.append(Sample(now, {d: dict(c) for d, c in counts.items()}))

    def rates(
        self, now: float, current: Mapping[str, Mapping[str, int]] | None = None, span: float = CHART_SECONDS
    ) -> dict[str, list[tuple[float, dict[str, float]]]]:
        """The rate chart's points (streams.ops.console.rates.rates) from this journal's samples."""
        return rates(self.samples, now, current, span)


def _delivery_bytes(delivery: Delivery) -> int:
    return DELIVERY_BYTES + STR_BYTES + len(delivery.message_id)


def _accounts(slots: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Account ids a destination remembers in its slot (`account_id`)."""
    found = set()
    for slot in (slots or {}).values():
        account = slot.get("account_id") if isinstance(slot, Mapping) else None
        if isinstance(account, str) and account:
            found.add(account)
    return found
