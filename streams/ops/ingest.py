"""`cs-relay ingest`: a Segment HTTP Tracking API compatible front door to the input topic.

Point a Segment SDK (segment-analytics-python, @segment/analytics-node, analytics.js)
at this service instead of `https://api.segment.io` and its calls land on the Kafka
input topic, one record per message, keyed by user, for the worker to relay.

Endpoints (all POST, JSON body, optionally `Content-Encoding: gzip`):

    /v1/identify /v1/track /v1/page /v1/screen /v1/group /v1/alias   one message
    /v1/batch (and /v1/import)   {"batch": [msg, ...], "context": {}, "integrations": {}}
    /v1/i /v1/t /v1/p /v1/s /v1/g /v1/a /v1/b   the same, as analytics.js spells them
    GET /health                                 200 {"status": "ok"} (liveness only)
    GET /ready                                  200 while Kafka takes records, else 503
    GET /metrics                                Prometheus text (CS_RELAY_ADMIN_TOKEN when set)
    GET /version                                {"version", "python", "faust"}

Readiness: 503 until the producer has connected, and while Kafka is unreachable. The
sink remembers the outcome of its last start, send or check; `/ready` answers from it
while it is a success younger than READY_RECHECK_SECONDS, else checks now (connect, or
a metadata request) for at most READY_PROBE_TIMEOUT, so an outage is seen without
traffic. Metrics (`IngestMetrics`, the service's own registry): requests by path and
status, messages produced, produce latency in seconds (by outcome), request body bytes
(as sent), Kafka readiness, build info and the process.

Rules, checked in this order (the first failure answers):

1. Auth. HTTP Basic with a write key as the user name (the password is ignored; SDKs
   send it empty), else `writeKey` in the JSON body. A key must be one of
   `CS_RELAY_WRITE_KEYS`. A malformed or unknown `Authorization` header answers 401 at
   once, before the body is read; without one the body's `writeKey` decides after step 3.
   Keys are never echoed, logged or produced: `writeKey` is removed from every message.
2. Body. At most `MAX_REQUEST_BYTES` (500 KB) on the wire and again after gzip
   decompression (which stops at the limit: no gzip bombs). Content-Encoding may be
   absent, `identity`, `gzip` or `x-gzip`.
3. JSON. UTF-8 JSON; the single-call endpoints want an object, batch endpoints an object
   with a `batch` array of at most `MAX_BATCH_MESSAGES` (2,500) items and, when present,
   object `context` / `integrations`.
4. Messages. Each message as produced (after the changes below) is at most
   `MAX_MESSAGE_BYTES` (32 KB) of compact JSON -- the limit the worker's
   `streams.core.segment.parse` applies to a record -- and encodes as strict JSON (no NaN,
   Infinity or unpaired surrogates).
5. Validation. A single call must pass `streams.core.segment` validation: 400 with its reason
   (`"reason": "missing_field"`, `"field": "event"`, ...). Batch items are NOT validated
   here: a batch that passes steps 1-4 is accepted whole and its invalid items are
   produced as they are, for the worker to dead-letter with their reason (Segment
   likewise accepts a batch and drops bad items later). Nothing is refused for good
   after the client was told 200, and one bad item never makes an SDK drop (400 is not
   retried) the 99 good ones beside it.

What is changed in each message: single calls get `type` from the path (overriding the
body's); batch items get the batch's `context` and `integrations` merged in key by key
(the message's own keys win) and the batch's `sentAt` when they have none; every message
gets `receivedAt` (now, ISO-8601 UTC with milliseconds, replacing a client's value, as
Segment does) and loses `writeKey`. `messageId` is left alone: when it is missing the
worker derives a deterministic one, so a retried request deduplicates.

Kafka. Records go to `Settings.input_topic` with `acks=all`, key = the user
(`streams.ops.producer.user_key`: userId, else anonymousId; none for an unparseable item),
in request order (one user's messages share a partition, so their order is kept). The
answer 200 `{"success": true}` is sent only after Kafka acknowledged every record of the
request. When it cannot (broker down, topic missing, no acknowledgement within
`Settings.ingest_timeout`), the answer is 503 and the client retries; records of a
failed request that Kafka did take are produced again by the retry (at least once:
`messageId` deduplicates downstream). 503 carries no `Retry-After`: the Python SDK
answers one by re-queueing the batch behind newer calls, which would reorder them. The
producer starts lazily, so the service comes up (and answers 503) while Kafka is down.

Errors are JSON, always of one shape, which the Segment SDKs read into their APIError:

    {"success": false, "code": "<machine code>", "message": "<one readable line>", ...}

    code                  status  when
    unauthorized          401     no write key, an unknown one, a malformed Authorization
    unsupported_encoding  400     a Content-Encoding other than gzip/identity
    invalid_gzip          400     a gzip body that does not decompress
    request_too_large     400     a body over 500 KB (on the wire or decompressed)
    invalid_json          400     not UTF-8 JSON, or a message that is not strict JSON
    invalid_batch         400     not an object, no `batch` array, a non-object context
    too_many_messages     400     a batch of more than 2,500 messages
    message_too_large     400     a message over 32 KB
    invalid_message       400     a single call failing validation; adds reason, field
    request_timeout       408     the body did not arrive within BODY_TIMEOUT (10 s); the
                                  connection is closed
    rate_limited          429     over CS_RELAY_INGEST_RATE_LIMIT requests per second for
                                  this write key; `Retry-After` says when to come back
    kafka_unavailable     503     Kafka did not acknowledge in time: retry
    not_found / method_not_allowed  404 / 405

Errors about one item of a batch add `"index"` (0-based).

Connections. A request's head (request line and headers) must arrive within
IDLE_TIMEOUT (5 s) of the connection or of the previous answer, and its body within
BODY_TIMEOUT (10 s); a connection idle that long between requests is closed too, so a
client that sends half a request holds its socket for seconds, not for good. A key in
the Authorization header is checked before any of the body is read: a bad one is
refused at once, whatever the body's size. With CS_RELAY_INGEST_RATE_LIMIT each write
key gets that many requests per second (bursts of one second's worth), then 429. The pure parts
(`authorization_key`, `check_write_key`, `decode_body`, `request_records`, ...) are
unit-tested without a server; the aiohttp handlers only read, call and answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import signal
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.core.segment import MAX_MESSAGE_BYTES, MESSAGE_TYPES, InvalidMessage, parse
from streams.kafkaconn import KafkaSecurity, start_client
from streams.ops import webserve
from streams.ops.logs import RedactingStreamHandler
from streams.ops.observe import build_info, versions, with_process_collectors
from streams.ops.producer import user_key
from streams.settings import Secret, Settings, SettingsError

__all__ = [
    "BATCH",
    "DEFAULT_PORT",
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "IngestError",
    "IngestMetrics",
    "KafkaSink",
    "KafkaUnavailable",
    "Record",
    "Sink",
    "authorization_key",
    "check_write_key",
    "create_app",
    "decode_body",
    "received_at",
    "request_records",
    "run_ingest",
]

log = logging.getLogger("cs_relay.ingest")

DEFAULT_PORT = 8088
IDLE_TIMEOUT = 5.0  # seconds for a request's head, and between requests on a connection
BODY_TIMEOUT = 10.0  # seconds for a request's body, once its head has arrived
LINGER = 1.0  # seconds a refused request's unread body is still drained (aiohttp's lingering close)
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
BATCH = "batch"
# The path's last segment -> the message type, or BATCH.
ENDPOINTS: dict[str, str] = {
    **{type_: type_ for type_ in MESSAGE_TYPES},
    **{type_[0]: type_ for type_ in MESSAGE_TYPES},  # analytics.js: /v1/t, /v1/i, ...
    "batch": BATCH,
    "import": BATCH,
    "b": BATCH,
}
_GZIP = frozenset({"gzip", "x-gzip"})


class IngestError(Exception):
    """A request the ingest refuses; `body()` is the JSON answer (see the module doc)."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(code, message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"success": False, "code": self.code, "message": self.message, **self.extra}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def _unauthorized(message: str) -> IngestError:
    return IngestError(401, "unauthorized", message)


def _bad(code: str, message: str, **extra: Any) -> IngestError:
    return IngestError(400, code, message, **extra)


class KeyRates:
    """A token bucket per write key: `rate` requests per second, bursts of one second's
    worth. Only configured keys reach it (after the key check), so it stays small."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: str) -> float:
        """0 when the request may go (a token is taken), else the seconds until one may."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def _rate_limited(wait: float, rate: float) -> IngestError:
    return IngestError(
        429,
        "rate_limited",
        f"over {rate:g} requests per second for this write key (CS_RELAY_INGEST_RATE_LIMIT)",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record to produce: the user key (None for an unparseable item) and the message."""

    key: bytes | None
    value: bytes


# --------------------------------------------------------------------------- pure parts


def authorization_key(header: str | None) -> str | None:
    """The write key of an `Authorization: Basic base64(key:)` header; None without a
    header. Raises IngestError(401) for another scheme, bad base64 or an empty key."""
    if header is None or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("Authorization must be HTTP Basic with the write key as the user name")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("the Basic credentials are not base64 of 'writeKey:'") from None
    key = decoded.partition(":")[0]
    if not key:
        raise _unauthorized("the Basic credentials hold no write key (the user name is the key)")
    return key


def check_write_key(key: object, keys: Iterable[Secret]) -> None:
    """Raise IngestError(401) unless `key` is one of `keys` (compared in constant time)."""
    if not isinstance(key, str) or not key:
        raise _unauthorized("a write key is required: HTTP Basic user name or 'writeKey' in the body")
    given = key.encode("utf-8", "surrogatepass")
    matched = False
    for secret in keys:
        matched |= hmac.compare_digest(given, secret.reveal().encode("utf-8"))
    if not matched:
        raise _unauthorized("unknown write key")


def body_write_key(body: object) -> object:
    """The `writeKey` field of a JSON body (None when absent or not an object)."""
    return body.get("writeKey") if isinstance(body, dict) else None


def decode_body(data: bytes, content_encoding: str | None, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The request body as sent by the client, gunzipped when `content_encoding` says so.
    Raises IngestError(400) for an unknown encoding, broken gzip, or more than `limit`
    bytes before or after decompression (decompression stops at the limit)."""
    if len(data) > limit:
        raise _too_large(len(data), limit)
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in _GZIP:
        raise _bad("unsupported_encoding", "Content-Encoding must be gzip or absent")
    out = bytearray()
    rest = data
    while rest:  # a gzip file may hold several members
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise _bad("invalid_gzip", f"the gzip body does not decompress: {exc}") from None
        if len(out) > limit:
            raise _bad("request_too_large", f"the body is more than {limit} bytes once decompressed")
        if not inflater.eof:
            raise _bad("invalid_gzip", "the gzip body is truncated")
        rest = inflater.unused_data
    return bytes(out)


def _too_large(size: int, limit: int) -> IngestError:
    return _bad("request_too_large", f"the body is {size} bytes, more than the limit of {limit}")


def parse_json(data: bytes) -> Any:
    """The decoded body. Raises IngestError(400, invalid_json)."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _bad("invalid_json", f"the body is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise _bad("invalid_json", "the body nests too deeply") from None
    except ValueError as exc:
        raise _bad("invalid_json", f"the body is not valid JSON: {exc}") from None


def received_at(now: datetime | None = None) -> str:
    """`now` (default: the current time) as Segment writes receivedAt: `2024-05-01T10:20:30.123Z`."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def stamp(message: dict[str, Any], now: str) -> dict[str, Any]:
    """A copy of `message` with `receivedAt` set to `now` and no `writeKey`."""
    out = {k: v for k, v in message.items() if k != "writeKey"}
    out["receivedAt"] = now
    return out


def merge_batch_fields(message: Any, envelope: Mapping[str, Any]) -> Any:
    """`message` with the batch's `context` and `integrations` merged in key by key (the
    message's own keys win) and the batch's `sentAt` when it has none. A message that is
    not an object, or whose own context is not one, is left as it is (the worker
    dead-letters it)."""
    if not isinstance(message, dict):
        return message
    out = dict(message)
    for field in ("context", "integrations"):
        shared = envelope.get(field)
        if not shared:
            continue
        own = out.get(field)
        if own is None:
            out[field] = dict(shared)
        elif isinstance(own, dict):
            out[field] = {**shared, **own}
    if out.get("sentAt") is None and envelope.get("sentAt") is not None:
        out["sentAt"] = envelope["sentAt"]
    return out


def encode_message(message: Any, index: int | None = None) -> bytes:
    """A message as the compact UTF-8 JSON record the worker reads. Raises
    IngestError(400) when it is not strict JSON or more than MAX_MESSAGE_BYTES."""
    where = {} if index is None else {"index": index}
    try:
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except RecursionError:
        raise _bad("invalid_json", "a message nests too deeply", **where) from None
    except ValueError:  # NaN/Infinity (or an overflowing number), unpaired surrogates
        raise _bad("invalid_json", "a message holds NaN, Infinity or an unpaired surrogate", **where) from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise _bad(
            "message_too_large",
            f"a message is {len(data)} bytes, more than the limit of {MAX_MESSAGE_BYTES}",
            **where,
        )
    return data


def single_record(type_: str, body: Any, now: str) -> Record:
    """The record of one call to /v1/{type}. Raises IngestError(400) when the body is not a
    valid message of that type."""
    if not isinstance(body, dict):
        raise _bad("invalid_message", "the body must be a JSON object", reason="not_an_object")
    value = encode_message(stamp({**body, "type": type_}, now))
    try:
        message = parse(value)
    except InvalidMessage as exc:
        raise _bad("invalid_message", exc.detail, reason=exc.reason.value, field=exc.field) from None
    return Record(message.key.encode("utf-8"), value)


def batch_records(body: Any, now: str) -> list[Record]:
    """The records of a batch request, in order. Raises IngestError(400) for a broken
    envelope or an item over the limits; invalid items are kept (see the module doc)."""
    if not isinstance(body, dict):
        raise _bad("invalid_batch", "the body must be a JSON object with a 'batch' array")
    items = body.get("batch")
    if not isinstance(items, list):
        raise _bad("invalid_batch", "the body needs a 'batch' array of messages")
    if len(items) > MAX_BATCH_MESSAGES:
        raise _bad(
            "too_many_messages", f"the batch holds {len(items)} messages, more than the limit of {MAX_BATCH_MESSAGES}"
        )
    for field in ("context", "integrations"):
        if body.get(field) is not None and not isinstance(body[field], dict):
            raise _bad("invalid_batch", f"the batch's '{field}' must be an object")
    records = []
    for index, item in enumerate(items):
        message = merge_batch_fields(item, body)
        if isinstance(message, dict):
            message = stamp(message, now)
        value = encode_message(message, index)
        records.append(Record(user_key(value), value))
    return records


def request_records(endpoint: str, body: Any, now: str) -> list[Record]:
    """The records a request to /v1/{endpoint} produces (see ENDPOINTS)."""
    type_ = ENDPOINTS[endpoint]
    if type_ == BATCH:
        return batch_records(body, now)
    return [single_record(type_, body, now)]


# --------------------------------------------------------------------------- Kafka


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


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    data = bytearray()
    while chunk := await request.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise _too_large(len(data), limit)
    return bytes(data)


class IngestMetrics:
    """The ingest's metrics, on a registry of its own (with the process collectors)."""

    BODY_BUCKETS = (256, 1024, 4096, 16384, 65536, 131072, 262144, MAX_REQUEST_BYTES)

    def __init__(self, sink: Any) -> None:
        self.registry = with_process_collectors(CollectorRegistry(auto_describe=False))
        self.registry.register(_BuildInfo())
        r = self.registry
        self.requests = Counter(
            "cs_relay_ingest_requests", "HTTP requests answered, by path and status.", ["path", "status"], registry=r
        )
        self.produced = Counter(
            "cs_relay_ingest_messages_produced",
            "Messages Kafka acknowledged (acks=all) on the input topic.",
            registry=r,
        )
        self.produce_seconds = Histogram(
            "cs_relay_ingest_produce_seconds",
            "Time from handing a request's records to the producer to Kafka's acknowledgement of all of them "
            "(outcome acknowledged), or to the 503 (outcome unavailable).",
            ["outcome"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.body_bytes = Histogram(
            "cs_relay_ingest_request_body_bytes",
            "Request bodies as sent (before gzip decoding), in bytes.",
            registry=r,
            buckets=self.BODY_BUCKETS,
        )
        ready = Gauge(
            "cs_relay_ingest_kafka_ready",
            "1 when the last start, send or check of the Kafka producer succeeded.",
            registry=r,
        )
        ready.set_function(lambda: 0.0 if getattr(sink, "connected", True) is not True else 1.0)
        for outcome in ("acknowledged", "unavailable"):
            self.produce_seconds.labels(outcome)  # both series from the start, for rate()


class _BuildInfo:
    def collect(self) -> list:
        return [build_info()]


def path_label(request: web.Request) -> str:
    """The route of a request, from a fixed set: `/v1/track` (the endpoint as called,
    one of ENDPOINTS), `/health`, ...; `unmatched` for a 404 or 405."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    endpoint = info.get("endpoint")
    return f"/v1/{endpoint}" if endpoint else info.route.resource.canonical


def create_app(
    write_keys: Sequence[Secret],
    sink: Sink,
    *,
    clock: Callable[[], str] = received_at,
    admin_token: str = "",
    body_timeout: float = BODY_TIMEOUT,
    rate_limit: float = 0.0,
    rate_clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The ingest application: `sink` stores accepted records; `clock` gives receivedAt;
    `admin_token` (CS_RELAY_ADMIN_TOKEN), when set, guards /metrics; `rate_limit`
    (CS_RELAY_INGEST_RATE_LIMIT, 0: none) requests per second per write key, on
    `rate_clock`. Serve it with `serve` (no automatic decompression: gzip is decoded
    here; the idle and lingering timeouts)."""
    keys = tuple(write_keys)
    metrics = IngestMetrics(sink)
    rates = KeyRates(rate_limit, rate_clock) if rate_limit > 0 else None

    @web.middleware
    async def count_requests(request: web.Request, handler: Callable) -> web.StreamResponse:
        # Outermost: json_errors below has made every refusal an answer; what still
        # raises is a bug, which aiohttp answers 500.
        try:
            response = await handler(request)
        except Exception:
            metrics.requests.labels(path_label(request), "500").inc()
            raise
        metrics.requests.labels(path_label(request), str(response.status)).inc()
        return response

    @web.middleware
    async def json_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            return await handler(request)
        except IngestError as exc:
            headers = dict(exc.headers)
            if exc.status == 401:
                headers["WWW-Authenticate"] = 'Basic realm="cs-relay ingest"'
            response = web.json_response(exc.body(), status=exc.status, headers=headers)
            if exc.status == 408:
                response.force_close()  # the rest of that body is not waited for
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            return web.json_response(
                {"success": False, "code": code, "message": exc.reason},
                status=exc.status,
                headers={k: v for k, v in exc.headers.items() if k == "Allow"},
            )

    def within_rate(key: object) -> None:
        if rates is not None and isinstance(key, str) and (wait := rates.take(key)) > 0:
            raise _rate_limited(wait, rates.rate)

    async def ingest(request: web.Request) -> web.Response:
        # The header's key is checked, and its rate, before any of the body is read.
        header_key = authorization_key(request.headers.get("Authorization"))
        if header_key is not None:
            check_write_key(header_key, keys)
            within_rate(header_key)
        try:
            async with asyncio.timeout(body_timeout):
                raw = await _read_body(request, MAX_REQUEST_BYTES)
        except TimeoutError:
            raise IngestError(
                408, "request_timeout", f"the request body did not arrive within {body_timeout:g} s"
            ) from None
        metrics.body_bytes.observe(len(raw))
        body = parse_json(decode_body(raw, request.headers.get("Content-Encoding")))
        if header_key is None:
            key = body_write_key(body)
            check_write_key(key, keys)
            within_rate(key)
        records = request_records(request.match_info["endpoint"], body, clock())
        if records:
            started = time.perf_counter()
            try:
                await sink.send(records)
            except IngestError:
                metrics.produce_seconds.labels("unavailable").observe(time.perf_counter() - started)
                raise
            metrics.produce_seconds.labels("acknowledged").observe(time.perf_counter() - started)
            metrics.produced.inc(len(records))
        return web.json_response({"success": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(request: web.Request) -> web.Response:
        check = getattr(sink, "ready", None)
        ok = True if check is None else await check()
        state = "connected" if ok else ("connecting" if getattr(sink, "connected", None) is None else "unreachable")
        return web.json_response({"ready": ok, "kafka": state}, status=200 if ok else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        if not webserve.authorized(request.headers.get("Authorization"), admin_token):
            return web.json_response(
                {
                    "success": False,
                    "code": "unauthorized",
                    "message": "send 'Authorization: Bearer <CS_RELAY_ADMIN_TOKEN>'",
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="cs-relay ingest"'},
            )
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def version(request: web.Request) -> web.Response:
        return web.json_response(versions())

    app = web.Application(middlewares=[count_requests, json_errors], client_max_size=MAX_REQUEST_BYTES + 1)
    endpoints = "|".join(sorted(ENDPOINTS))
    app.router.add_post(f"/v1/{{endpoint:(?:{endpoints})}}", ingest)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/version", version)
    return app


async def serve(
    app: web.Application, host: str, port: int, *, idle_timeout: float = IDLE_TIMEOUT
) -> tuple[web.AppRunner, int]:
    """Start the ingest `app` on `host`:`port` (0: a free port); the runner and the bound
    port. The server does not decompress bodies itself: the app decodes gzip within limits.
    `idle_timeout`: aiohttp's keep-alive timer, which also closes a connection whose
    request head is incomplete that long (it runs from the connection and from each
    answer until the next head is complete)."""
    return await webserve.serve(
        app, host, port, auto_decompress=False, keepalive_timeout=idle_timeout, lingering_time=LINGER
    )


async def _run_until_signalled(settings: Settings, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sink = KafkaSink(
        settings.kafka_bootstrap_servers,
        settings.input_topic,
        timeout=settings.ingest_timeout,
        security=settings.kafka_security,
    )
    runner, bound = await serve(
        create_app(
            settings.write_keys,
            sink,
            admin_token=settings.admin_token.reveal(),
            rate_limit=settings.ingest_rate_limit,
        ),
        host,
        port,
    )
    try:
        log.info(
            "cs-relay ingest listening on http://%s:%d, producing to %s at %s (%d write key(s), ack timeout %gs, "
            "rate limit %s)",
            host,
            bound,
            settings.input_topic,
            settings.kafka_bootstrap_servers,
            len(settings.write_keys),
            settings.ingest_timeout,
            f"{settings.ingest_rate_limit:g}/s per write key" if settings.ingest_rate_limit else "none",
        )
        if not await sink.start():
            log.warning(
                "Kafka at %s is not reachable yet (%s): answering 503 until it is",
                settings.kafka_bootstrap_servers,
                sink.last_error,
            )
        await stop.wait()
    finally:
        await runner.cleanup()
        await sink.stop()


def run_ingest(settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
    """`cs-relay ingest`: serve until SIGINT/SIGTERM. Refuses to start without write keys."""
    if not settings.write_keys:
        raise SettingsError("CS_RELAY_WRITE_KEYS is not set: the ingest needs at least one write key (key[,key...])")
    handler = RedactingStreamHandler(sys.stderr, secrets=settings.secrets())  # caller text escaped, keys masked
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # not a warning per reconnection attempt
    asyncio.run(_run_until_signalled(settings, host, port))
    return 0
