"""`cs-relay ingest` (streams/ingest.py): the pure rules, the HTTP service with an
in-memory sink, and end to end with the real broker and the official Segment SDK."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.cli.commands import main as cli_main
from streams.localkafka import LocalKafka
from streams.ops.ingest import (
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    IngestError,
    KafkaSink,
    KafkaUnavailable,
    Record,
    authorization_key,
    check_write_key,
    create_app,
    decode_body,
    parse_json,
    received_at,
    request_records,
    run_ingest,
    serve,
)
from streams.settings import Secret, Settings, SettingsError

KEY, OTHER_KEY = "wk-test-key-1", "wk-test-key-2"
KEYS = (Secret(KEY), Secret(OTHER_KEY))
NOW = "2024-05-01T10:20:30.123Z"
TRACK = {"userId": "u1", "event": "Signed In", "properties": {"plan": "pro"}}
VALID = {
    "identify": {"userId": "u1", "traits": {"email": "a@example.com"}},
    "track": TRACK,
    "page": {"anonymousId": "anon-1", "name": "Home"},
    "screen": {"userId": "u1", "name": "Dashboard"},
    "group": {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}},
    "alias": {"userId": "u1", "previousId": "anon-1"},
}


def basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


def reason_of(exc_info: pytest.ExceptionInfo[IngestError]) -> tuple[int, str]:
    return exc_info.value.status, exc_info.value.code


def decoded(record: Record) -> dict[str, Any]:
    return json.loads(record.value)


def batch_of(*messages: Any, **envelope: Any) -> dict[str, Any]:
    return {"batch": list(messages), **envelope}


# --------------------------------------------------------------------------- auth


def test_basic_auth_gives_the_user_name_as_write_key():
    assert authorization_key(None) is None and authorization_key("  ") is None
    assert authorization_key(basic(KEY)) == KEY
    assert authorization_key(basic(KEY, "ignored")) == KEY
    assert authorization_key("basic " + base64.b64encode(f"{KEY}:".encode()).decode()) == KEY


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {KEY}",  # another scheme
        "Basic not*base64",  # bad base64
        "Basic " + base64.b64encode(b":pw").decode(),  # no user name
        "Basic " + base64.b64encode(b"\xff:").decode(),  # not UTF-8
    ],
)
def test_malformed_authorization_is_401_without_the_value(header):
    with pytest.raises(IngestError) as exc_info:
        authorization_key(header)
    assert reason_of(exc_info) == (401, "unauthorized")
    assert KEY not in str(exc_info.value.body())


def test_write_key_must_be_one_of_the_configured_keys():
    check_write_key(KEY, KEYS)
    check_write_key(OTHER_KEY, KEYS)
    for bad in (None, "", 42, "wk-test-key-3", KEY + " "):
        with pytest.raises(IngestError) as exc_info:
            check_write_key(bad, KEYS)
        assert reason_of(exc_info) == (401, "unauthorized")
    with pytest.raises(IngestError):
        check_write_key(KEY, ())


# --------------------------------------------------------------------------- body and limits


def test_body_decoding_plain_and_gzip():
    data = json.dumps(TRACK).encode()
    assert decode_body(data, None) == data and decode_body(data, "identity") == data
    assert decode_body(gzip.compress(data), "gzip") == data
    assert decode_body(gzip.compress(data), " X-GZIP ") == data
    assert decode_body(gzip.compress(data[:10]) + gzip.compress(data[10:]), "gzip") == data  # two members


@pytest.mark.parametrize(
    "data,encoding,code",
    [
        (b"{}", "br", "unsupported_encoding"),
        (b"{}", "gzip, gzip", "unsupported_encoding"),
        (b"not gzip at all", "gzip", "invalid_gzip"),
        (gzip.compress(b'{"a": 1}' * 100)[:-12], "gzip", "invalid_gzip"),  # truncated
        (b" " * (MAX_REQUEST_BYTES + 1), None, "request_too_large"),
        (gzip.compress(b" " * (20 * MAX_REQUEST_BYTES)), "gzip", "request_too_large"),  # a gzip bomb stops at the limit
    ],
)
def test_body_decoding_refusals(data, encoding, code):
    with pytest.raises(IngestError) as exc_info:
        decode_body(data, encoding)
    assert reason_of(exc_info) == (400, code)


def test_body_at_the_limit_is_accepted_compressed_or_not():
    data = b" " * MAX_REQUEST_BYTES
    assert decode_body(data, None) == data
    assert decode_body(gzip.compress(data), "gzip") == data


@pytest.mark.parametrize("data", [b"{", b"nope", b'{"a": 1} x', b"\xff\xfe{}", b"[" * 100_000])
def test_bad_json_is_400(data):
    with pytest.raises(IngestError) as exc_info:
        parse_json(data)
    assert reason_of(exc_info) == (400, "invalid_json")


def test_received_at_is_iso_8601_utc_with_milliseconds():
    moment = datetime(2024, 5, 1, 12, 20, 30, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert received_at(moment) == NOW
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", received_at())


# --------------------------------------------------------------------------- single calls


@pytest.mark.parametrize("type_", sorted(VALID))
def test_the_path_sets_the_type_and_receivedAt_is_stamped(type_):
    body = {
        **VALID[type_],
        "type": "identify" if type_ != "identify" else "track",
        "receivedAt": "2020-01-01T00:00:00Z",
        "writeKey": KEY,
    }
    [record] = request_records(type_, body, NOW)
    message = decoded(record)
    assert message["type"] == type_ and message["receivedAt"] == NOW
    assert "writeKey" not in message and KEY.encode() not in record.value
    assert "messageId" not in message  # the worker derives one
    assert record.key == (body.get("userId") or body.get("anonymousId")).encode()
    assert request_records(type_[0], body, NOW) == [record]  # analytics.js's /v1/t, /v1/i, ...


def test_single_call_key_is_user_id_else_anonymous_id():
    assert request_records("track", {**TRACK, "userId": 42, "anonymousId": "a"}, NOW)[0].key == b"42"
    assert request_records("track", {**TRACK, "userId": None, "anonymousId": "a"}, NOW)[0].key == b"a"


@pytest.mark.parametrize(
    "body,reason,field",
    [
        ({"userId": "u1"}, "missing_field", "event"),
        ({"event": "E"}, "missing_field", "userId"),
        ({**TRACK, "timestamp": "yesterday"}, "invalid_timestamp", "timestamp"),
        ({**TRACK, "properties": [1]}, "wrong_type", "properties"),
        (["not", "an", "object"], "not_an_object", None),
    ],
)
def test_an_invalid_single_call_is_400_with_the_reason(body, reason, field):
    with pytest.raises(IngestError) as exc_info:
        request_records("track", body, NOW)
    assert reason_of(exc_info) == (400, "invalid_message")
    assert exc_info.value.body()["reason"] == reason
    assert exc_info.value.body().get("field") == field


def test_single_message_size_limit_counts_the_record_as_produced():
    fits = {**TRACK, "properties": {"x": "y" * (MAX_MESSAGE_BYTES - 200)}}
    [record] = request_records("track", fits, NOW)
    assert len(record.value) <= MAX_MESSAGE_BYTES
    too_big = {**TRACK, "properties": {"x": "y" * MAX_MESSAGE_BYTES}}
    with pytest.raises(IngestError) as exc_info:
        request_records("track", too_big, NOW)
    assert reason_of(exc_info) == (400, "message_too_large")


def test_nan_and_unpaired_surrogates_are_invalid_json():
    for body in (
        parse_json(b'{"userId": "u1", "event": "E", "properties": {"v": NaN}}'),
        parse_json(b'{"userId": "u1", "event": "E\\ud800"}'),
    ):
        with pytest.raises(IngestError) as exc_info:
            request_records("track", body, NOW)
        assert reason_of(exc_info) == (400, "invalid_json")


# --------------------------------------------------------------------------- batches


def test_batch_merges_context_and_integrations_message_fields_win():
    body = batch_of(
        {"type": "track", "userId": "u1", "event": "A", "context": {"ip": "1.1.1.1", "locale": "fr"}},
        {"type": "identify", "userId": "u2", "integrations": {"All": True}, "sentAt": "2024-05-01T10:00:01Z"},
        {"type": "page", "anonymousId": "a3", "receivedAt": "2020-01-01T00:00:00Z", "writeKey": KEY},
        context={"ip": "9.9.9.9", "library": {"name": "analytics-python"}},
        integrations={"All": False, "ClientSuccess": True},
        sentAt="2024-05-01T10:00:00Z",
        writeKey=KEY,
    )
    records = request_records("batch", body, NOW)
    assert [r.key for r in records] == [b"u1", b"u2", b"a3"]
    first, second, third = map(decoded, records)
    assert first["context"] == {"ip": "1.1.1.1", "locale": "fr", "library": {"name": "analytics-python"}}
    assert first["integrations"] == {"All": False, "ClientSuccess": True}
    assert second["integrations"] == {"All": True, "ClientSuccess": True}
    assert first["sentAt"] == "2024-05-01T10:00:00Z" and second["sentAt"] == "2024-05-01T10:00:01Z"
    assert all(m["receivedAt"] == NOW and "writeKey" not in m for m in (first, second, third))
    assert body["batch"][0]["context"] == {"ip": "1.1.1.1", "locale": "fr"}  # the request is not modified
    assert request_records("import", body, NOW) == records == request_records("b", body, NOW)


def test_batch_keeps_invalid_items_for_the_worker_to_dead_letter():
    body = batch_of(
        {"type": "track", "userId": "u1"},  # no event
        {"type": "launch", "userId": "u1"},  # unknown type
        {"type": "track", "userId": "u1", "event": "E", "context": "not an object"},
        42,
        {"type": "track", "userId": "u2", "event": "E"},
    )
    records = request_records("batch", body, NOW)
    assert len(records) == 5
    assert [r.key for r in records] == [None, None, None, None, b"u2"]
    assert decoded(records[0]) == {"type": "track", "userId": "u1", "receivedAt": NOW}
    assert decoded(records[2])["context"] == "not an object"
    assert records[3].value == b"42"
    assert request_records("batch", batch_of(), NOW) == []


@pytest.mark.parametrize(
    "body,code",
    [
        ([{"type": "track"}], "invalid_batch"),
        ({"messages": []}, "invalid_batch"),
        ({"batch": {"type": "track"}}, "invalid_batch"),
        (batch_of(context="web"), "invalid_batch"),
        (batch_of(integrations=[1]), "invalid_batch"),
        (batch_of(*[{"type": "track", "userId": "u", "event": "E"}] * (MAX_BATCH_MESSAGES + 1)), "too_many_messages"),
    ],
)
def test_structurally_broken_batches_are_400(body, code):
    with pytest.raises(IngestError) as exc_info:
        request_records("batch", body, NOW)
    assert reason_of(exc_info) == (400, code)


def test_batch_limits_name_the_item():
    ok = {"type": "track", "userId": "u", "event": "E"}
    assert len(request_records("batch", batch_of(*[ok] * MAX_BATCH_MESSAGES), NOW)) == MAX_BATCH_MESSAGES
    big = {**ok, "properties": {"x": "y" * MAX_MESSAGE_BYTES}}
    with pytest.raises(IngestError) as exc_info:
        request_records("batch", batch_of(ok, big), NOW)
    assert reason_of(exc_info) == (400, "message_too_large") and exc_info.value.body()["index"] == 1
    # merging the batch's context counts towards an item's size
    near = {**ok, "properties": {"x": "y" * (MAX_MESSAGE_BYTES - 300)}}
    request_records("batch", batch_of(near), NOW)
    with pytest.raises(IngestError):
        request_records("batch", batch_of(near, context={"pad": "z" * 400}), NOW)


# --------------------------------------------------------------------------- settings and CLI


def test_write_keys_setting():
    s = Settings.from_env({"CS_RELAY_WRITE_KEYS": f" {KEY} ,{OTHER_KEY},{KEY}", "CS_RELAY_INGEST_TIMEOUT": "2.5"})
    assert [k.reveal() for k in s.write_keys] == [KEY, OTHER_KEY] and s.ingest_timeout == 2.5
    assert KEY not in repr(s) and KEY not in json.dumps(s.redacted())
    assert KEY in s.secrets()  # redacted from the worker's logs and dead letters too
    assert Settings.from_env({}).write_keys == ()


@pytest.mark.parametrize("value", [f"{KEY},,{OTHER_KEY}", f"{KEY}:pw", f"{KEY} x", ","])
def test_bad_write_keys_name_the_variable_never_the_key(value):
    with pytest.raises(SettingsError, match="CS_RELAY_WRITE_KEYS") as exc_info:
        Settings.from_env({"CS_RELAY_WRITE_KEYS": value})
    assert KEY not in str(exc_info.value)


def test_ingest_refuses_to_start_without_write_keys(monkeypatch, capsys):
    with pytest.raises(SettingsError, match="CS_RELAY_WRITE_KEYS is not set"):
        run_ingest(Settings.from_env({}))
    monkeypatch.delenv("CS_RELAY_WRITE_KEYS", raising=False)
    assert cli_main(["ingest", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CS_RELAY_WRITE_KEYS" in err


# --------------------------------------------------------------------------- HTTP, in-memory sink


class MemorySink:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.down = False

    async def send(self, records: Sequence[Record]) -> None:
        if self.down:
            raise KafkaUnavailable(ConnectionRefusedError())
        self.records.extend(records)

    async def stop(self) -> None:
        pass


class Ingest:
    """A running ingest on a free port and a client session to call it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | None = KEY,
        data: bytes | None = None,
        gzipped: bool = False,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = basic(key)
        if data is None:
            data = json.dumps(body).encode()
        if gzipped:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        async with self.session.post(self.url + path, data=data, headers=headers) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def serving(sink: Any, **app_options: Any) -> AsyncIterator[Ingest]:
    """The ingest on a free port, storing into `sink` (stopped at the end)."""
    runner, port = await serve(create_app(KEYS, sink, **app_options), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield Ingest(f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()
        await sink.stop()


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def ingest(sink) -> AsyncIterator[Ingest]:
    async with serving(sink, clock=lambda: NOW) as client:
        yield client


async def test_http_single_call_with_basic_auth(ingest, sink):
    assert await ingest.post("/v1/track", TRACK) == (200, {"success": True})
    [record] = sink.records
    assert record.key == b"u1" and decoded(record) == {**TRACK, "type": "track", "receivedAt": NOW}


async def test_http_write_key_in_the_body_and_gzip(ingest, sink):
    status, answer = await ingest.post(
        "/v1/batch", batch_of(VALID["group"] | {"type": "group"}, writeKey=OTHER_KEY), key=None, gzipped=True
    )
    assert (status, answer) == (200, {"success": True})
    assert decoded(sink.records[0])["groupId"] == "g1" and OTHER_KEY.encode() not in sink.records[0].value


@pytest.mark.parametrize("key,body_key", [(None, None), ("wrong", None), (None, "wrong"), ("wrong", KEY)])
async def test_http_missing_or_unknown_key_is_401(ingest, sink, caplog, key, body_key):
    status, answer = await ingest.post("/v1/track", {**TRACK, "writeKey": body_key}, key=key)
    assert status == 401 and answer["success"] is False and answer["code"] == "unauthorized"
    assert sink.records == [] and KEY not in json.dumps(answer) + caplog.text


async def test_http_400s_are_json_with_code_and_message(ingest, sink):
    assert (await ingest.post("/v1/track", data=b"{nope"))[0] == 400
    status, answer = await ingest.post("/v1/track", {"userId": "u1"})
    assert status == 400 and answer["code"] == "invalid_message" and answer["field"] == "event"
    status, answer = await ingest.post("/v1/batch", data=b" " * (MAX_REQUEST_BYTES + 1))
    assert (status, answer["code"]) == (400, "request_too_large")
    status, answer = await ingest.post(
        "/v1/batch",
        data=gzip.compress(b" " * (MAX_REQUEST_BYTES + 1)),
        gzipped=False,
        headers={"Content-Encoding": "gzip"},
    )
    assert (status, answer["code"]) == (400, "request_too_large")
    status, answer = await ingest.post("/v1/batch", batch_of(TRACK, TRACK, {**TRACK, "p": "x" * MAX_MESSAGE_BYTES}))
    assert (status, answer["code"], answer["index"]) == (400, "message_too_large", 2)
    assert sink.records == []


async def test_http_kafka_down_is_503(ingest, sink):
    sink.down = True
    status, answer = await ingest.post("/v1/track", TRACK)
    assert status == 503 and answer == {
        "success": False,
        "code": "kafka_unavailable",
        "message": "Kafka did not acknowledge the messages in time: retry",
    }


async def test_http_health_and_unknown_routes(ingest):
    async with ingest.session.get(ingest.url + "/health") as response:
        assert response.status == 200 and await response.json() == {"status": "ok"}
    status, answer = await ingest.post("/v1/purchase", TRACK)
    assert (status, answer["code"]) == (404, "not_found")
    async with ingest.session.get(ingest.url + "/v1/track") as response:
        assert response.status == 405 and (await response.json())["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- with the real broker


async def new_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"ingest-test-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[tuple[bytes | None, dict]]:
    """The first `count` records of `topic` (key, decoded value), waiting up to `timeout` s."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[tuple[bytes | None, dict]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend((r.key, json.loads(r.value)) for r in batch)
    finally:
        await consumer.stop()
    return records


class KafkaIngest:
    def __init__(self, bootstrap: str, topic: str, client: Ingest) -> None:
        self.bootstrap, self.topic, self.client = bootstrap, topic, client

    async def read(self, count: int) -> list[tuple[bytes | None, dict]]:
        return await read_topic(self.bootstrap, self.topic, count)


@pytest.fixture
async def kafka_ingest(kafka_bootstrap) -> AsyncIterator[KafkaIngest]:
    topic = await new_topic(kafka_bootstrap)
    async with serving(KafkaSink(kafka_bootstrap, topic, timeout=10)) as client:
        yield KafkaIngest(kafka_bootstrap, topic, client)


@pytest.mark.e2e
async def test_posted_messages_reach_the_topic_keyed_by_user(kafka_ingest):
    for type_ in ("identify", "group", "track", "page"):
        assert await kafka_ingest.client.post(f"/v1/{type_}", VALID[type_]) == (200, {"success": True})
    records = await kafka_ingest.read(4)
    assert [key for key, _ in records] == [b"u1", b"u1", b"u1", b"anon-1"]
    for (_, message), type_ in zip(records, ("identify", "group", "track", "page"), strict=True):
        assert message == {**VALID[type_], "type": type_, "receivedAt": message["receivedAt"]}
        assert datetime.fromisoformat(message["receivedAt"]) > datetime.now(UTC) - timedelta(minutes=1)


@pytest.mark.e2e
async def test_a_batch_produces_all_its_messages_in_order(kafka_ingest):
    items = [{"type": "track", "userId": f"u{i % 7}", "event": f"E{i}"} for i in range(300)]
    items.insert(150, {"type": "track", "userId": "u1"})  # invalid: produced for the worker to dead-letter
    status, _ = await kafka_ingest.client.post("/v1/batch", batch_of(*items, context={"ip": "1.2.3.4"}), gzipped=True)
    assert status == 200
    records = await kafka_ingest.read(len(items))
    assert [message.get("event") for _, message in records] == [item.get("event") for item in items]
    assert [key for key, _ in records] == [
        None if i == 150 else item["userId"].encode() for i, item in enumerate(items)
    ]
    assert all(message["context"] == {"ip": "1.2.3.4"} for _, message in records)


async def assert_503_in_time(client: Ingest, seconds: float) -> None:
    started = time.monotonic()
    status, answer = await client.post("/v1/track", TRACK)
    assert (status, answer["code"]) == (503, "kafka_unavailable")
    assert time.monotonic() - started < seconds


@pytest.mark.e2e
async def test_503_when_nothing_listens_at_the_bootstrap_address():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with serving(KafkaSink(f"127.0.0.1:{port}", "segment-events", timeout=2)) as client:
        await assert_503_in_time(client, 5)


@pytest.mark.e2e
async def test_503_within_the_timeout_when_the_broker_goes_away(tmp_path):
    kafka = await asyncio.to_thread(LocalKafka(port=0, data_dir=tmp_path / "kafka").start, 60)
    try:
        async with serving(KafkaSink(kafka.bootstrap_servers, "doomed", timeout=2)) as client:
            assert (await client.post("/v1/track", TRACK))[0] == 200  # connected, topic known
            await asyncio.to_thread(kafka.kill)
            await assert_503_in_time(client, 5)
    finally:
        await asyncio.to_thread(kafka.kill)


# --------------------------------------------------------------------------- the official Segment SDK


def sdk_client(url: str, **options: Any):
    import segment.analytics as analytics

    errors: list[Exception] = []
    client = analytics.Client(
        KEY,
        host=url,
        on_error=lambda error, batch: errors.append(error),
        upload_interval=0.05,
        max_retries=2,
        **options,
    )
    return client, errors


@pytest.mark.e2e
async def test_the_segment_python_sdk_sends_to_the_ingest(kafka_ingest):
    client, errors = sdk_client(kafka_ingest.client.url, gzip=True)

    def send() -> None:
        client.identify("u1", {"email": "a@example.com", "firstName": "Ada"})
        client.group("u1", "g1", {"name": "Acme"})
        client.track("u1", "Report Built", {"value": 3})
        client.page("u1", "Docs", "Home", {"path": "/"})
        client.shutdown()

    await asyncio.to_thread(send)
    assert errors == []
    records = await kafka_ingest.read(4)
    assert [(key, m["type"]) for key, m in records] == [
        (b"u1", "identify"),
        (b"u1", "group"),
        (b"u1", "track"),
        (b"u1", "page"),
    ]
    identify, group, track, page = (m for _, m in records)
    assert identify["traits"]["firstName"] == "Ada" and group["groupId"] == "g1" and group["traits"]["name"] == "Acme"
    assert track["event"] == "Report Built" and page["name"] == "Home" and page["category"] == "Docs"
    for message in (identify, group, track, page):
        assert message["context"]["library"]["name"] == "analytics-python"
        assert message["messageId"] and message["sentAt"] and message["receivedAt"] and "writeKey" not in message


@pytest.mark.e2e
async def test_sdk_throughput(kafka_ingest):
    total = 2000
    client, errors = sdk_client(kafka_ingest.client.url, upload_size=250, max_queue_size=total)

    def send() -> float:
        started = time.perf_counter()
        for i in range(total):
            client.track(f"user-{i % 50}", "Feature Used", {"n": i, "feature": "reports"})
        client.shutdown()
        return time.perf_counter() - started

    elapsed = await asyncio.to_thread(send)
    assert errors == []
    records = await kafka_ingest.read(total)
    assert len(records) == total
    print(
        f"\ningest throughput with segment-analytics-python: {total} messages in {elapsed:.2f}s "
        f"= {total / elapsed:,.0f} messages/s (batches of 250, acks=all)",
        file=sys.stderr,
    )


# --------------------------------------------------------------------------- the command


@pytest.mark.e2e
async def test_cs_relay_ingest_command(kafka_bootstrap):
    topic = await new_topic(kafka_bootstrap)
    env = {
        **os.environ,
        "CS_RELAY_WRITE_KEYS": f"{KEY},{OTHER_KEY}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CS_RELAY_INPUT_TOPIC": topic,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        "ingest",
        "--port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        output += line
        port = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", line)
        assert port, line
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{int(port[1])}/v1/track", json=TRACK, headers={"Authorization": basic(KEY)}
            ) as response:
                assert response.status == 200
        [(key, message)] = await read_topic(kafka_bootstrap, topic, 1)
        assert key == b"u1" and message["event"] == "Signed In"
    finally:
        if proc.returncode is None:
            proc.terminate()
        output += await asyncio.wait_for(proc.stdout.read(), 20)
        await proc.wait()
    assert proc.returncode == 0, output
    assert KEY.encode() not in output and OTHER_KEY.encode() not in output
