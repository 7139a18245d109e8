"""What the console shows that the tables do not keep: a worker's recent work, in
bounded memory.

The runtime feeds one `Journal` (`Runtime.journal`) with one-line calls where the work
happens:

* `delivery()` when a partner answered a delivery or a retry (`effects.deliver`,
  `retries.retry`): the user's recent deliveries, newest first, a few per user for the
  most recently active users;
* `dead_letter()` when this worker sent a dead letter (`effects.dead_letter`): its key,
  original bytes and headers, so the console can show and replay it as `cs-relay dlq
  replay` would;
* `routed()` when a Segment call was routed (`handlers.route_call`): which users were
  seen in which group, and which users and groups carry an account id a destination
  remembers (CustomerSuccessBox's `account_id`), so the group page and the search need
  no scan of a table;
* `sample()` every SAMPLE_INTERVAL seconds (a timer): the per-destination counters, for
  the rate chart over the last hour.

Everything is bounded by count (and dead letters by bytes too); the oldest goes first.
Counts are this process's: a restart starts empty. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.deadletter import DeadLetterRecord, read_headers

SAMPLE_INTERVAL = 15.0  # seconds between counter samples
CHART_SECONDS = 3600.0  # the rate chart's span
SAMPLES = int(CHART_SECONDS // SAMPLE_INTERVAL) + 1

USERS_WITH_DELIVERIES = 5000
DELIVERIES_PER_USER = 20
DEAD_LETTERS = 200
DEAD_LETTER_BYTES = 8 * 1024 * 1024  # original bytes kept in all, for replay
GROUPS = 5000
USERS_PER_GROUP = 200
ACCOUNTS = 5000
MEMBERS_PER_ACCOUNT = 50

# What a delivery's outcome (streams.core.retry.Outcome values) means to a person.
OUTCOME_WORDS = {"done": "delivered", "retry": "failed, will retry", "fail": "refused"}


class LRU:
    """A bounded mapping: `touch` moves a key to the newest end, the oldest leave first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: OrderedDict[str, Any] = OrderedDict()

    def touch(self, key: str, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def newest_first(self) -> list[tuple[str, Any]]:
        return list(reversed(self._items.items()))


class Index:
    """name -> members, each with when it was last seen; bounded in names and in
    members per name (least recently seen leave first)."""

    def __init__(self, names: int, members: int) -> None:
        self._names = LRU(names)
        self.members_limit = members

    def add(self, name: str, member: str, now: float) -> None:
        members = self._names.get(name) or LRU(self.members_limit)
        members.touch(member, now)
        self._names.touch(name, members)

    def members(self, name: str) -> list[tuple[str, float]]:
        """(member, last seen), most recent first."""
        members = self._names.get(name)
        return members.newest_first() if members else []

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True)
class Delivery:
    at: float
    destination: str
    message_id: str
    outcome: str  # done, retry, fail
    status: int | None  # the partner's HTTP status; None: no answer
    retry: bool = False  # a retry of a parked delivery

    @property
    def words(self) -> str:
        return OUTCOME_WORDS.get(self.outcome, self.outcome)


@dataclass
class DeadLetterEntry:
    """A dead letter this worker sent: what `cs-relay dlq` would read back."""

    id: int
    at: float
    record: DeadLetterRecord  # key, original bytes, headers without the prefix
    user: str | None  # the user key, when the record has one
    replayed_at: list[float] = field(default_factory=list)

    @property
    def headers(self) -> Mapping[str, str]:
        return self.record.headers

    @property
    def reason(self) -> str:
        return self.record.reason

    @property
    def size(self) -> int:
        return len(self.record.value) + len(self.record.key or b"")


@dataclass(frozen=True)
class Sample:
    at: float
    counts: Mapping[str, Mapping[str, int]]  # destination -> kind -> cumulative count


RATE_KINDS = ("delivered", "retried", "refused", "dead_lettered")


def destination_counts(stats: Any, destinations: Iterable[str]) -> dict[str, dict[str, int]]:
    """Cumulative per-destination counts from the runtime's `Stats`
    (streams.ops.observe): answers by outcome, and dead letters."""
    out = {d: dict.fromkeys(RATE_KINDS, 0) for d in destinations}
    kinds = {"done": "delivered", "retry": "retried", "fail": "refused"}
    for (dest, _status, outcome), n in stats.responses.items():
        if dest in out and outcome in kinds:
            out[dest][kinds[outcome]] += n
    for (_stage, _reason, dest), n in stats.dead_letters.items():
        if dest in out:
            out[dest]["dead_lettered"] += n
    return out


class Journal:
    def __init__(
        self,
        *,
        users: int = USERS_WITH_DELIVERIES,
        per_user: int = DELIVERIES_PER_USER,
        dead_letters: int = DEAD_LETTERS,
        dead_letter_bytes: int = DEAD_LETTER_BYTES,
        groups: int = GROUPS,
        per_group: int = USERS_PER_GROUP,
        accounts: int = ACCOUNTS,
        per_account: int = MEMBERS_PER_ACCOUNT,
        samples: int = SAMPLES,
    ) -> None:
        self.per_user = per_user
        self._deliveries = LRU(users)
        self.dead_letter_limit = dead_letters
        self.dead_letter_bytes = dead_letter_bytes
        self._dead: deque[DeadLetterEntry] = deque()
        self._dead_bytes = 0
        self._ids = itertools.count(1)
        self.groups = Index(groups, per_group)  # groupId -> user keys
        self.accounts = Index(accounts, per_account)  # account id -> "user:KEY" / "group:ID"
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
        ring = self._deliveries.get(key) or deque(maxlen=self.per_user)
        ring.appendleft(Delivery(now, destination, message_id, getattr(outcome, "value", outcome), status, retry))
        self._deliveries.touch(key, ring)

    def deliveries(self, key: str) -> list[Delivery]:
        """The user's recent deliveries, newest first."""
        return list(self._deliveries.get(key) or ())

    # ------------------------------------------------------------------ dead letters

    def dead_letter(self, key: bytes | None, value: bytes, headers: Mapping[str, bytes], now: float) -> DeadLetterEntry:
        record = DeadLetterRecord(-1, -1, key, bytes(value), read_headers(headers.items()))
        user = key.decode("utf-8", "replace") if key else None
        entry = DeadLetterEntry(next(self._ids), now, record, user)
        self._dead.append(entry)
        self._dead_bytes += entry.size
        while self._dead and (len(self._dead) > self.dead_letter_limit or self._dead_bytes > self.dead_letter_bytes):
            self._dead_bytes -= self._dead.popleft().size
        return entry

    def dead_letters(self, reason: str | None = None) -> list[DeadLetterEntry]:
        """Newest first; those with `reason` when given."""
        return [e for e in reversed(self._dead) if reason is None or e.reason == reason]

    def dead_letter_by_id(self, ident: int) -> DeadLetterEntry | None:
        return next((e for e in self._dead if e.id == ident), None)

    def reasons(self) -> list[str]:
        return sorted({e.reason for e in self._dead})

    @property
    def dead_letter_size(self) -> int:
        return self._dead_bytes

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
        """Per destination, per interval between samples within `span` of `now` (the
        current counts as the last point, when given): (interval end, per-minute rate
        of each kind). A counter that went down (it cannot, but) counts as 0."""
        points = [s for s in self.samples if s.at >= now - span]
        if current is not None:
            points.append(Sample(now, current))
        out: dict[str, list[tuple[float, dict[str, float]]]] = {}
        for before, after in _pairs(points):
            seconds = after.at - before.at
            if seconds <= 0:
                continue
            for dest, counts in after.counts.items():
                prior = before.counts.get(dest, {})
                out.setdefault(dest, []).append(
                    (
                        after.at,
                        {k: max(0, counts.get(k, 0) - prior.get(k, 0)) * 60.0 / seconds for k in RATE_KINDS},
                    )
                )
        return out


def _pairs(items: list[Sample]) -> Iterator[tuple[Sample, Sample]]:
    return zip(items, items[1:], strict=False)


def _accounts(slots: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Account ids a destination remembers in its slot (`account_id`)."""
    found = set()
    for slot in (slots or {}).values():
        account = slot.get("account_id") if isinstance(slot, Mapping) else None
        if isinstance(account, str) and account:
            found.add(account)
    return found
