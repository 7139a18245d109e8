"""The runtime object: a worker's parts, held together (wiring only).

`Runtime.from_settings(settings, tables=..., outbox=..., ...)` builds it: the enabled
destinations and their delivery clients (`streams.runtime.wiring`), the tables it reads
and writes, where its records go (`streams.runtime.outbox`), and the parts that keep
what is not in the tables, each a class of its own module with its own assignment
hooks, which the runtime's `assigned` and `revoked` call in turn:

* `acks` (streams.runtime.acks): acknowledgements in offset order, the redelivery
  guard; `revoked(tps)`.
* `groups` (streams.runtime.groupview): the groups as this worker sees them (the
  global copy, those made here until it catches up, a user's own copy).
* `rows` (streams.runtime.rows): the users' rows, read decoded, and the counts of what
  waits; `assigned(partitions)`.
* `parking` (streams.runtime.parking): parking marks, the catch-up of new partitions,
  the retry rescan, the senders' hold; `assigned(partitions)`, `revoked(lost)`.
* `sending` (streams.runtime.sending): the senders, the circuit breakers, the backoff,
  the releases under way; `revoked(lost)`.
* `windows` (streams.runtime.windows): the aggregation windows' close index and those
  closing; `assigned(partitions)`.
* `spills` (streams.runtime.spillstore) and `seen_packs` (streams.runtime.seenpacks),
  and the `observer` the app's wiring connects (the metrics and the console:
  streams.runtime.observing).

The Faust app (`streams.runtime.app`) creates one and hands it to the agents, control
record handlers and timers (`intake`, `routing`, `handlers`, `effects`, `retries`,
`merge`, `sweep`, `aggregation`), which are functions of it. Tables are anything with a
dict's `get`, `__setitem__`, `__delitem__` and `items` (Faust tables in the worker,
plain dicts in unit tests), so those functions run without a broker.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.core import control
from streams.core.destination import Destination
from streams.core.memory import Memory
from streams.core.redact import redact
from streams.partitioner import Partitioner
from streams.runtime import spilling, wiring
from streams.runtime.acks import Acks
from streams.runtime.delivery import PartnerClient
from streams.runtime.groupview import GroupView
from streams.runtime.observing import Observer, Unobserved
from streams.runtime.outbox import BY_USER, Outbox, produce
from streams.runtime.parking import Parking
from streams.runtime.rows import Rows
from streams.runtime.seenpacks import SeenPacks
from streams.runtime.sending import Sending
from streams.runtime.spillstore import SpillStore
from streams.runtime.topiclist import by_user_topic_name
from streams.runtime.windows import Windows
from streams.settings import Settings

log = logging.getLogger("cs_relay")


REVOKE_TIMEOUT = 10.0  # seconds for a revoked partition's cancelled work to stop

Table = MutableMapping[str, Any]


@dataclass(frozen=True)
class Tables:
    """The worker's state. Users, pending and seen rows live in the partition of their
    user key: every read and write in `route` is local to the worker that owns the key.
    Groups are global (every worker has all of them). `windows`: open aggregation windows (streams.core.aggregate)."""

    users: Table
    pending: Table
    groups: Table
    seen: Table
    windows: Table = field(default_factory=dict)
    waiters: Table = field(default_factory=dict)  # groupId -> its waiting users (streams.core.waiters)
    payloads: Table = field(default_factory=dict)  # a body row per waiting event (streams.core.pendingrows)
    spill: Table = field(default_factory=dict)  # spilled deliveries' index and order rows (streams.core.spill)
    spillrows: Table = field(default_factory=dict)  # and their bodies


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        destinations: Sequence[Destination],
        clients: Mapping[str, PartnerClient],
        memories: Sequence[Memory],
        tables: Tables,
        outbox: Outbox,
        partition_of: Partitioner,
        recovered: Callable[[], bool],
        clock: Callable[[], float],
        counters: Counter[str],
        acks: Acks,
        groups: GroupView,
        rows: Rows,
        parking: Parking,
        sending: Sending,
        windows: Windows,
        spills: SpillStore,
        seen_packs: SeenPacks,
        observer: Observer,
    ) -> None:
        self.settings = settings
        self.destinations = list(destinations)
        self.clients = dict(clients)
        self.memories = list(memories)  # what every registered destination remembers
        self.consent = wiring.consent_rules(settings)  # every destination's, enabled or not
        self.tables = tables
        self.outbox = outbox
        self.partition_of = partition_of  # a user key's by-user partition
        self.partitions = partition_of.partitions  # by-user partitions (the topic's, once known)
        self.recovered = recovered  # tables recovered and no rebalance under way
        self.clock = clock
        self.by_user_topic = by_user_topic_name(settings.app_id)
        self.owned: frozenset[int] = frozenset()  # the by-user partitions assigned here (not standbys)
        self.counters = counters
        self.acks = acks
        self.groups = groups
        self.rows = rows
        self.parking = parking
        self.sending = sending
        self.windows = windows
        self.spills = spills  # streams.runtime.spilling
        self.seen_packs = seen_packs
        self.changelog = seen_packs.changelog  # each event's table writes, awaited before its ack
        # Told of dead letters, deliveries and routed calls: /metrics, /status and the
        # console, as the app's wiring connects them (streams.runtime.observing).
        self.observer = observer
        # Set when work failed for good (`failed_for_good`): /ready answers 503 saying
        # so, and `stop` (given by the app) stops the worker so that it is redone.
        self.failure: str | None = None
        self.stop: Callable[[BaseException], Any] = lambda exc: None
        acks.on_failure = self.failed_for_good
        parking.caught_up = self._caught_up

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        tables: Tables,
        outbox: Outbox,
        partitions: Callable[[], int] | None = None,
        recovered: Callable[[], bool] = lambda: True,
        clients: Mapping[str, PartnerClient] | None = None,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Runtime:
        """The runtime of a worker configured by `settings` (the one place that builds
        it and its parts); `clients` replaces the HTTP clients, `clock` the time and
        `rng` the backoff's randomness (unit tests); `observer` is told what it does
        (streams.runtime.observing)."""
        clients = wiring.clients(settings) if clients is None else clients
        partition_of = Partitioner(partitions or (lambda: settings.topic_partitions))
        counters: Counter[str] = Counter()
        acks = Acks(max_bytes=settings.max_unacked_bytes)
        parking = Parking(
            instance=uuid.uuid4().hex[:12],
            partition_of=partition_of,
            destinations=frozenset(clients),
            deadline=settings.delivery_deadline,
            pressed=acks.pressed,
        )
        rows = Rows(
            users=tables.users,
            pending=tables.pending,
            payloads=tables.payloads,
            seen=tables.seen,
            partition_of=partition_of,
            index_retry=parking.index_retry,
        )
        sending = Sending(
            settings,
            partition_of=partition_of,
            counters=counters,
            clock=clock,
            rng=rng or random.Random(),
            hold=parking.hold,
            holding=parking.catchup.awaited,
        )
        spills = SpillStore(tables.spill, tables.spillrows, partition_of)
        runtime = cls(
            settings,
            destinations=wiring.destinations(settings),
            clients=clients,
            memories=wiring.memories(),
            tables=tables,
            outbox=outbox,
            partition_of=partition_of,
            recovered=recovered,
            clock=clock,
            counters=counters,
            acks=acks,
            groups=GroupView(tables.groups),
            rows=rows,
            parking=parking,
            sending=sending,
            windows=Windows(partition_of),
            spills=spills,
            seen_packs=SeenPacks(tables.seen, acks.changelog),
            observer=observer or Unobserved(),
        )
        # The senders count each chain's deliveries (the fairness share) and tell
        # spilling when one of a pair with spilled deliveries ends.
        sending.senders.watch = spills.known
        sending.senders.ended = functools.partial(spilling.ended, runtime)
        return runtime

    def destination(self, key: str) -> Destination | None:
        return next((d for d in self.destinations if d.key == key), None)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        log.info("cs-relay settings: %s", json.dumps(self.settings.redacted()))
        wiring.announce(self.settings, log)
        for client in self.clients.values():
            await client.start()

    async def close_clients(self) -> None:
        await self.parking.catchup.close()
        for client in self.clients.values():
            await client.close()

    def assigned(self, by_user_partitions: set[int]) -> None:
        """A rebalance ended and gave this worker `by_user_partitions`: each part forgets
        what it kept of the users of partitions that went elsewhere (the next owner
        finds it in the tables and in Kafka), and looks for what the new ones hold."""
        self.owned = frozenset(by_user_partitions)
        self.parking.assigned(by_user_partitions)
        self.spills.assigned(by_user_partitions)
        self.rows.assigned(by_user_partitions)
        self.windows.assigned(by_user_partitions)

    def _caught_up(self, partition: int, token: str) -> Callable[[], Any]:
        """The write of a partition's caught-up record (streams.runtime.catchup)."""
        value, headers = control.encode(control.CaughtUp(token))
        return lambda: produce(self.outbox, BY_USER, key=b"", value=value, headers=headers, partition=partition)

    def failed_for_good(self, tp: Any, exc: BaseException) -> None:
        """Work for an event of `tp` failed past its own retries (a produce Kafka keeps
        refusing, a dead letter that cannot be written). Its event, and every later one
        of that partition, can never be acknowledged here: rather than sit wedged (the
        partition's commits stopped, back-pressure soon stopping every partition) the
        worker stops, and a restart (its supervisor's) redoes the event."""
        if self.failure is not None:
            return
        self.failure = redact(
            f"work for an event of {tp} failed for good: {type(exc).__name__}: {exc}", self.settings.secrets()
        )
        log.critical("%s; stopping the worker: after a restart the event is processed again", self.failure)
        self.stop(exc)

    async def revoked(self, tps: Iterable[tuple[str, int]]) -> bool:
        """A rebalance took `tps` (topic, partition) from this worker. Whoever gets them
        next (another worker, or this one again) reads them from the committed offset and
        does their work again, so this worker stops what it still had under way for them
        before the rebalance goes on: their events are never acknowledged, and the
        deliveries, retries and records of their users, running or queued, are cancelled.
        A delivery left running would reach the partner after, or between, the new
        owner's requests for the same user (a user's older traits arriving last). False
        if some work did not stop within REVOKE_TIMEOUT."""
        revoked = list(tps)
        self.acks.revoked(revoked)
        lost = {p for topic, p in revoked if topic == self.by_user_topic}
        self.spills.revoked(lost)  # before the senders stop: none of theirs is handed over again
        if not lost:
            return True

        stopped = await self.sending.revoked(lost, REVOKE_TIMEOUT)
        self.parking.revoked(lost)  # their marks and catch-up
        self.seen_packs.forget(lost)  # its events are not acknowledged here: their entries neither
        if not stopped:
            log.warning("some work of revoked partitions did not stop within %.0f s", REVOKE_TIMEOUT)
        return stopped

    def report(self) -> None:
        if self.counters:
            log.info(
                "cs-relay counters: %s; unacknowledged events: %d",
                dict(sorted(self.counters.items())),
                self.acks.in_flight,
            )
