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
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.core.segment import MAX_MESSAGE_BYTES
from streams.ops import webserve
from streams.ops.ingest_metrics import IngestMetrics, path_label
from streams.ops.ingest_sink import KafkaSink, KafkaUnavailable, Sink
from streams.ops.logs import RedactingStreamHandler
from streams.ops.observe import versions
from streams.ops.tracking_api import (
    BATCH,
    ENDPOINTS,
    MAX_BATCH_MESSAGES,
    MAX_REQUEST_BYTES,
    IngestError,
    KeyRates,
    Record,
    authorization_key,
    body_write_key,
    check_write_key,
    decode_body,
    parse_json,
    rate_limited,
    received_at,
    request_records,
    too_large,
)
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


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(request.content_length, limit)
    data = bytearray()
    while chunk := await request.content.read(limit + 1 - len(data)):
        data += chunk
        if len(data) > limit:
            raise too_large(len(data), limit)
    return bytes(data)


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
            raise rate_limited(wait, rates.rate)

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
