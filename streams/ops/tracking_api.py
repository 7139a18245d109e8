"""Segment's HTTP Tracking API as plain functions: the write key (header or body), the
request's body (gzip, size limits), its JSON, and the records it becomes (one message, or
a batch with its shared `context` / `integrations`, each stamped with `receivedAt`).
Errors are `IngestError`s carrying Segment's answer. No server and no Kafka here:
`streams.ops.ingest` serves these, `streams.ops.ingest_sink` produces the records."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.core.message import InvalidMessage
from streams.core.segment import MAX_MESSAGE_BYTES, parse
from streams.core.validation import MESSAGE_TYPES
from streams.ops.producer import user_key
from streams.settings import Secret

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


def rate_limited(wait: float, rate: float) -> IngestError:
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
        raise too_large(len(data), limit)
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


def too_large(size: int, limit: int) -> IngestError:
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
