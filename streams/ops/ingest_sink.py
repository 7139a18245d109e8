"""Where `cs-relay ingest` puts a request's records: a `Sink`; `KafkaSink` produces them to
the input topic with acks=all and answers only once Kafka has acknowledged every one
(503, `KafkaUnavailable`, when it does not within the timeout)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from streams.kafkaconn import KafkaSecurity, start_client
from streams.ops.tracking_api import IngestError, Record

log = logging.getLogger("cs_relay.ingest")


class Sink(Protocol):
    """Where accepted records go. `send` returns once every record is stored, or raises
    IngestError(503). A sink may also have `async ready() -> bool` (may check Kafka) and
    `connected: bool | None` (the last outcome, for /metrics); without them the service
    counts as ready."""

    async def send(self, records: Sequence[Record]) -> None: ...


READY_PROBE_TIMEOUT = 2.0  # seconds /ready waits for a check of Kafka
READY_RECHECK_SECONDS = 10.0  # a success older than this is checked again by /ready


class KafkaSink:
    """Produces records to one topic with acks=all and a bounded wait for the acknowledgement.

    The producer starts at the first `send` (or `start`) and again after a failed start,
    so the ingest runs, answering 503, while Kafka is unreachable."""

    def __init__(
        self, bootstrap_servers: str, topic: str, *, timeout: float = 10.0, security: KafkaSecurity | None = None
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.timeout = timeout
        self.security = security or KafkaSecurity()
        # Why the producer last failed to start, naming the setting (e.g. a refused SASL login).
        self.last_error = ""
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> bool:
        """Try to connect now; False when Kafka is unreachable (`send` tries again)."""
        try:
            await self._started(asyncio.get_running_loop().time() + self.timeout)
        except KafkaUnavailable:
            self._note(False)
            return False
        self._note(True)
        return True

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    # Readiness: the last outcome of a start, send or check, and when it was known.
    connected: bool | None = None  # None: nothing tried yet
    _outcome_at = 0.0
    _check: asyncio.Future | None = None

    def _note(self, ok: bool) -> None:
        self.connected = ok
        self._outcome_at = asyncio.get_running_loop().time()

    async def ready(self) -> bool:
        """Whether Kafka takes records: a recent success as it is, else a check now
        (connect, or a metadata request) waited for at most READY_PROBE_TIMEOUT; one
        check at a time, whoever asks (a check that takes longer records its outcome)."""
        if self.connected and asyncio.get_running_loop().time() - self._outcome_at < READY_RECHECK_SECONDS:
            return True
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._probe())
        try:
            return await asyncio.wait_for(asyncio.shield(self._check), READY_PROBE_TIMEOUT)
        except TimeoutError:
            return False

    async def _probe(self) -> bool:
        producer = self._producer
        if producer is None:
            return await self.start()
        try:  # aiokafka: True once a broker answered, False when none did
            ok = bool(await asyncio.wait_for(producer.client.force_metadata_update(), self.timeout))
        except Exception:  # KafkaError, TimeoutError
            ok = False
        self._note(ok)
        return ok

    async def send(self, records: Sequence[Record]) -> None:
        if not records:  # an empty batch stores nothing: no reason to wait for Kafka
            return
        try:
            await self._send(records)
            self._note(True)
        except KafkaUnavailable as exc:
            self._note(False)
            log.warning(
                "Kafka at %s did not acknowledge %d message(s) for %s in time (%s): answered 503",
                self.bootstrap_servers,
                len(records),
                self.topic,
                exc.cause,
            )
            raise

    async def _send(self, records: Sequence[Record]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        producer = await self._started(deadline)
        futures: list[asyncio.Future] = []
        try:
            async with asyncio.timeout_at(deadline):
                for record in records:
                    futures.append(await producer.send(self.topic, record.value, key=record.key))
            if futures:
                await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        except Exception as exc:  # KafkaError, TimeoutError (waiting for metadata or buffer space)
            raise KafkaUnavailable(exc) from None
        finally:
            for future in futures:  # no "exception was never retrieved" for late failures
                future.add_done_callback(_consume_exception)
        for future in futures:
            if not future.done():
                raise KafkaUnavailable(TimeoutError())
            error = future.exception()
            if error is not None:
                raise KafkaUnavailable(error)

    async def _started(self, deadline: float) -> Any:
        if self._producer is not None:
            return self._producer
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id="cs-relay-ingest",
                    acks="all",
                    linger_ms=2,
                    max_batch_size=256 * 1024,
                    request_timeout_ms=max(1, int(self.timeout * 1000)),
                    **self.security.client_options(),
                )
                try:
                    async with asyncio.timeout_at(deadline):
                        await start_client(producer, self.security, self.bootstrap_servers)
                except Exception as exc:  # KafkaConnectError, TimeoutError, ...
                    self.last_error = str(exc) or type(exc).__name__
                    await _quietly(producer.stop())
                    raise KafkaUnavailable(exc) from None
                self._producer = producer
        return self._producer


class KafkaUnavailable(IngestError):
    """503: Kafka did not take the records. `cause` (an exception's name) is for the log only."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(503, "kafka_unavailable", "Kafka did not acknowledge the messages in time: retry")
        self.cause = type(cause).__name__


def _consume_exception(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        pass


# --------------------------------------------------------------------------- HTTP
