"""The runtime object: everything a worker keeps while it runs, in one place.

`Runtime.from_settings(settings, tables=..., outbox=..., ...)` builds it: the enabled
destinations and their delivery clients (`streams.runtime.wiring`), the tables it reads
and writes, where its records go (`streams.runtime.outbox`), and the process-local
bookkeeping that is not in the tables: acknowledgements in offset order, per-user
chains served by the senders, redelivery guard, deliveries in flight, parking marks,
counters, and the `observer` the app's wiring connects (the metrics and the console:
streams.runtime.observing).

The Faust app (`streams.runtime.app`) creates one and hands it to the agents, control
record handlers and timers (`agents`, `handlers`, `effects`, `retries`, `merge`,
`sweep`, `aggregation`), which are functions of it. Tables are anything with a dict's `get`,
`__setitem__`, `__delitem__` and `items` (Faust tables in the worker, plain dicts in
unit tests), so those functions run without a broker.
"""

from __future__ import annotations

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
from streams.partitioner import owner_partition
from streams.runtime import wiring
from streams.runtime.acks import Acks
from streams.runtime.changelog import ChangelogWrites
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
        tables: Tables,
        outbox: Outbox,
        partitions: Callable[[], int],
        recovered: Callable[[], bool] = lambda: True,
        memories: Sequence[Memory] = (),
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.destinations = list(destinations)
        self.clients = dict(clients)
        self.memories = list(memories)  # what every registered destination remembers
        self.consent = wiring.consent_rules(settings)  # every destination's, enabled or not
        self.tables = tables
        self.outbox = outbox
        self.partitions = partitions  # by-user partitions (the topic's, once known)
        self.recovered = recovered  # tables recovered and no rebalance under way
        self.clock = clock
        self.rng = rng or random.Random()
        self.by_user_topic = by_user_topic_name(settings.app_id)
        self.acks = Acks(on_failure=self.failed_for_good)  # acknowledgements in offset order, the redelivery guard
        self.groups = GroupView(tables.groups)  # the groups as this worker sees them
        self.changelog = ChangelogWrites()  # each event's table writes, awaited before its ack
        self.seen_packs = SeenPacks(tables.seen, self.changelog)  # new dedupe entries, packed per partition
        # Set when work failed for good (`failed_for_good`): /ready answers 503 saying
        # so, and `stop` (given by the app) stops the worker so that it is redone.
        self.failure: str | None = None
        self.stop: Callable[[BaseException], Any] = lambda exc: None
        self.spills = SpillStore(tables.spill, tables.spillrows, self.partition_of)  # streams.runtime.spilling
        self.owned: frozenset[int] = frozenset()  # the by-user partitions assigned here (not standbys)
        self.windows = Windows(self.partition_of)  # aggregation windows in this process
        self.counters: Counter[str] = Counter()
        # Parking marks, the catch-up of new partitions, the retry rescan (streams.runtime.parking).
        self.parking = Parking(
            instance=uuid.uuid4().hex[:12],
            partition_of=self.partition_of,
            destinations=frozenset(self.clients),
            deadline=settings.delivery_deadline,
            pressed=self.acks.pressed,
            caught_up=self._caught_up,
        )
        # The users' rows, read decoded, and the counts of what waits (streams.runtime.rows).
        self.rows = Rows(
            users=tables.users,
            pending=tables.pending,
            payloads=tables.payloads,
            seen=tables.seen,
            partition_of=self.partition_of,
            index_retry=self.parking.index_retry,
        )
        # The senders, the circuit breakers, the releases under way (streams.runtime.sending).
        self.sending = Sending(
            settings,
            partition_of=self.partition_of,
            counters=self.counters,
            clock=clock,
            rng=self.rng,
            hold=self.parking.hold,
        )
        # Told of dead letters, deliveries and routed calls: /metrics, /status and the
        # console, as the app's wiring connects them (streams.runtime.observing).
        self.observer: Observer = observer or Unobserved()

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
    ) -> Runtime:
        """The runtime of a worker configured by `settings` (the one place that builds
        it); `clients` replaces the HTTP clients and `clock` the time (unit tests);
        `observer` is told what it does (streams.runtime.observing)."""
        return cls(
            settings,
            destinations=wiring.destinations(settings),
            clients=wiring.clients(settings) if clients is None else clients,
            memories=wiring.memories(),
            tables=tables,
            outbox=outbox,
            partitions=partitions or (lambda: settings.topic_partitions),
            recovered=recovered,
            observer=observer,
            clock=clock,
        )

    def destination(self, key: str) -> Destination | None:
        return next((d for d in self.destinations if d.key == key), None)

    def partition_of(self, key: str) -> int:
        return owner_partition(key, self.partitions())

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
        """A rebalance ended and gave this worker `by_user_partitions`. The parked
        deliveries of users in partitions that went elsewhere, and their park records in
        transit, are the next owner's now (it finds them in the table); ours would be
        stale if the partitions returned. Those that stayed keep theirs. Newly owned
        users may have parked deliveries: the next retry tick looks for them."""
        self.owned = frozenset(by_user_partitions)
        self.parking.assigned(by_user_partitions)
        self.spills.assigned(by_user_partitions)
        self.rows.assigned(by_user_partitions)
        self.windows.assigned(by_user_partitions)  # open windows likewise: the index rebuilt

    def _caught_up(self, partition: int, token: str) -> Callable[[], Any]:
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
