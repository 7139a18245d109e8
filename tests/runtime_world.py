"""A worker's runtime without a broker, for tests/test_runtime_*.py.

`World` builds the real `Runtime` from settings, with plain dicts for tables, a fake
partner client whose answers the test scripts, and an outbox that keeps what was
produced. Records are taken as the worker's agents take them, each a batch of one
(`streams.runtime.intake.rekey_batch`, `take_keyed_batch`, `route_batch`): those
produced to the by-user topic are routed back in the order they were produced, per
partition, as the topic would deliver them; dead letters are kept for inspection.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from streams.core import control
from streams.core.decision import PartnerRequest
from streams.core.incoming import Incoming
from streams.core.retry import Outcome, classify
from streams.ops.observer import OpsObserver
from streams.runtime import intake, retries
from streams.runtime.delivery import Result
from streams.runtime.outbox import BY_USER, DEAD_LETTERS
from streams.runtime.runtime import Runtime, Tables
from streams.runtime.scanahead import Scanned
from streams.settings import Settings

INPUT, BY_USER_TOPIC = "segment-events", "cs-relay-by-user"
PARTITIONS = 4
ENV = {
    "CLIENTSUCCESS_SOURCE_ID": "src",
    "CLIENTSUCCESS_API_KEY": "cs-key-0123456789",
    "CS_RELAY_TOPIC_PARTITIONS": str(PARTITIONS),
}


@dataclass
class Produced:
    to: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]
    partition: int | None

    @property
    def kind(self) -> bytes | None:
        return self.headers.get(control.KIND_HEADER)

    @property
    def reason(self) -> str:
        return self.headers["cs-relay-reason"].decode()


class CapturingOutbox:
    """Keeps every record; Kafka acknowledges each at once."""

    def __init__(self) -> None:
        self.records: list[Produced] = []

    async def send(
        self, to: str, *, key: bytes | None, value: bytes, headers: Mapping[str, bytes], partition: int | None = None
    ) -> asyncio.Future:
        self.records.append(Produced(to, key, value, dict(headers), partition))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def by_user(self, **record: Any) -> asyncio.Future:
        return await self.send(BY_USER, **record)


@dataclass
class FakeClient:
    """A partner: answers each request with the next scripted status, or (status,
    Retry-After) (200 when the script is over); while `gate` is set and closed, requests
    wait for it. `on_answer` is told each answer, as `PartnerClient.send` does."""

    name: str = "ClientSuccess"
    answers: list[int | tuple[int, float]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    requests: list[PartnerRequest] = field(default_factory=list)
    classify: Callable[[int | None], Outcome] = classify  # the shared rules, as a plugin's default

    async def send(
        self,
        request: PartnerRequest,
        *,
        budget: float | None = None,
        on_answer: Callable[[Outcome, int | None, float | None], bool] | None = None,
    ) -> Result:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.classify(status)
        if on_answer is not None:
            on_answer(outcome, status, retry_after)
        return Result(outcome, status, 1, f"answer {status}", 0.0, retry_after)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def events(self) -> list[str]:
        """The ClientSuccess event names requested, in order."""
        return [r.path.rsplit("/", 1)[-1] for r in self.requests]


class Event:
    """A Faust event, as the agents take it with its record: its acknowledgement goes
    to `acked`, and `done` is done then."""

    def __init__(self, record: Incoming, acked: list[tuple[str, int, int]]) -> None:
        self.message = SimpleNamespace(  # what Faust's tables read of the current event, too
            generation_id=App.consumer_generation_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._record, self._acked = record, acked

    def ack(self) -> None:
        self._acked.append((self._record.topic, self._record.partition, self._record.offset))
        if not self.done.done():
            self.done.set_result(None)


class App:
    """What the agents read of the Faust app: one consumer generation, the flow on (the
    world's rebalances are the tests' calls of `Runtime.assigned` and `revoked`)."""

    consumer_generation_id = 1
    flow_control = SimpleNamespace(is_active=lambda: True)


class World:
    def __init__(
        self, env: Mapping[str, str] | None = None, *, client: FakeClient | None = None, tables: Tables | None = None
    ) -> None:
        self.now = 1_700_000_000.0
        self.settings = Settings.from_env({**ENV, **(env or {})})
        self.client = client or FakeClient()
        self.outbox = CapturingOutbox()
        self.tables = tables or Tables(users={}, pending={}, groups={}, seen={})
        self.ops = OpsObserver()  # connected as the app's wiring does: its stats and journal
        self.rt = Runtime.from_settings(
            self.settings,
            tables=self.tables,
            outbox=self.outbox,
            clients={"clientsuccess": self.client},
            observer=self.ops,
            clock=lambda: self.now,
        )
        # The world moves by turns of the loop, not by time: a partition's packed dedupe
        # row is written on the turn after its first entry (streams.runtime.seenpacks).
        self.rt.seen_packs.linger = 0.0
        self.rt.parking.catchup.reader = self.read_ahead
        if self.settings.input_keyed_by_user:
            self.rt.parking.catchup.input.bounds = self.input_bounds
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.routed = 0  # how many produced records were read back
        self.acked: list[tuple[str, int, int]] = []
        self.taken: list[Incoming] = []  # every by-user record routed, in order

    # ------------------------------------------------------------------ input

    def _incoming(
        self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, bytes], partition: int
    ) -> Incoming:
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        return Incoming(key, value, dict(headers), topic, partition, offset)

    async def publish(self, **body: Any) -> None:
        """A Segment call on the input topic, taken by intake, then routed until idle."""
        value = json.dumps(body).encode()
        await self.intake(self._incoming(INPUT, None, value, {}, 0))
        await self.settle()

    async def publish_keyed(
        self, *, partition: int | None = None, headers: Mapping[str, bytes] | None = None, **body: Any
    ) -> Incoming:
        """A Segment call on an input topic keyed by user (CS_RELAY_INPUT_KEYED_BY_USER),
        in its user's partition unless `partition` says otherwise, taken by intake, then
        routed until idle."""
        value = json.dumps(body).encode()
        user = str(body.get("userId") or body.get("anonymousId") or "")
        where = self.rt.partition_of(user) if partition is None else partition
        record = self._incoming(INPUT, user.encode(), value, dict(headers or {}), where)
        await self.intake(record, keyed=True)
        await self.settle()
        return record

    async def intake(self, record: Incoming, *, keyed: bool = False) -> asyncio.Future[None]:
        """`record`, of the input topic, taken by intake (with CS_RELAY_INPUT_KEYED_BY_USER
        if `keyed`) as a batch of one; the future is done once it is acknowledged."""
        event = Event(record, self.acked)
        take = intake.take_keyed_batch if keyed else intake.rekey_batch
        await take(self.rt, App(), [(event, record)])  # type: ignore[arg-type]
        return event.done

    # ------------------------------------------------------------------ the by-user topic

    def unrouted(self) -> list[Produced]:
        return [r for r in self.outbox.records[self.routed :]]

    def route(self, record: Incoming) -> asyncio.Future[None]:
        """`record`, of the by-user topic, taken by route as a batch of one; the future
        is done once it is acknowledged."""
        event = Event(record, self.acked)
        intake.route_batch(self.rt, [(event, record)])
        return event.done

    async def settle(self, spins: int = 200) -> bool:
        """Route what was produced to the by-user topic, and let deliveries run, until
        nothing is left to do (True) or `spins` turns of the loop passed (False)."""
        for _ in range(spins):
            while self.routed < len(self.outbox.records):
                produced = self.outbox.records[self.routed]
                self.routed += 1
                if produced.to != BY_USER:
                    continue
                key = produced.key or b""
                partition = produced.partition
                if partition is None:
                    partition = self.rt.partition_of(key.decode("utf-8"))
                record = self._incoming(BY_USER_TOPIC, produced.key, produced.value, produced.headers, partition)
                self.taken.append(record)
                self.route(record)
            await asyncio.sleep(0)
            if self._idle():
                # The senders drop a user's queue as its last piece ends, before the
                # callbacks of that piece's future (which may start more) have run.
                await asyncio.sleep(0)
                if self._idle():
                    return True
        return False

    async def read_ahead(self, partitions: set[int]) -> AsyncGenerator[list[Scanned], None]:
        """The by-user partitions as the catch-up's scan reads them from Kafka
        (streams.runtime.catchup.Reader): from the start of the log (no later than any
        committed offset), a batch per turn of the loop, until closed."""
        at = 0
        while True:
            batch: list[Scanned] = []
            for produced in self.outbox.records[at:]:
                key = produced.key or b""
                partition = self.rt.partition_of(key.decode()) if produced.partition is None else produced.partition
                if produced.to == BY_USER and partition in partitions:
                    batch.append((partition, produced.key, produced.headers, produced.value))
                at += 1
            yield batch
            await asyncio.sleep(0)

    async def input_bounds(self, partitions: set[int]) -> dict[int, tuple[int, int]]:
        """The input partitions' committed offsets (past the last acknowledged record)
        and ends, as Kafka gives them (streams.runtime.inputcatchup.Bounds)."""
        committed = Counter({p: o + 1 for t, p, o in sorted(self.acked) if t == INPUT})
        return {p: (committed[p], self.offsets[(INPUT, p)]) for p in partitions}

    def _idle(self) -> bool:
        return (
            self.routed == len(self.outbox.records) and not self.rt.acks.in_flight and not len(self.rt.sending.senders)
        )

    async def redo(self, record: Incoming) -> bool:
        """Route a by-user record again, at its offset: what Kafka does after a crash
        or a rebalance before its offset was committed."""
        self.route(record)
        return await self.settle()

    async def drain_retries(self, user: str = "u1", rounds: int = 10) -> None:
        """Let the retry tick bring every parked delivery of `user` out, the clock moved
        to each head's retry time (the partner answers as scripted)."""
        for _ in range(rounds):
            pending = self.rt.rows.pending(user)
            if pending.is_empty():
                return
            self.now = max(p.next_at for q in pending.queues.values() for p in q.parked) + 0.1
            await retries.tick(self.rt)
            assert await self.settle()
        raise AssertionError(f"still waiting: {self.pending(user)}")

    # ------------------------------------------------------------------ reading

    def dead_letters(self) -> list[Produced]:
        return [r for r in self.outbox.records if r.to == DEAD_LETTERS]

    def controls(self, kind: bytes) -> list[Produced]:
        return [r for r in self.outbox.records if r.kind == kind]

    def pending(self, key: str) -> dict[str, Any]:
        """The user's ClientSuccess queues, whole (index and payload rows joined)."""
        return self.rt.rows.pending(key).to_dict()["queues"].get("clientsuccess", {})
