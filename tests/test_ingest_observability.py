"""`cs-relay ingest`'s operator endpoints (issue 14): /ready, /metrics, /version, with
the in-process app and a fake sink; the sink's readiness with a fake producer; and, end
to end, /ready across a broker that goes away."""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import json
import platform
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import streams
from streams.localkafka import LocalKafka
from streams.ops import ingest_sink as ingest_mod
from streams.ops.ingest import KafkaSink, KafkaUnavailable, Record, create_app, serve
from tests.test_ingest import KEY, KEYS, TRACK, basic

TOKEN = "ingest-admin-token-0123"


class FakeSink:
    """A sink whose Kafka is up or down as the test says, and that knows its state."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.up = True
        self.connected: bool | None = None

    async def send(self, records: Sequence[Record]) -> None:
        self.connected = self.up
        if not self.up:
            raise KafkaUnavailable(ConnectionRefusedError())
        self.records.extend(records)

    async def ready(self) -> bool:
        return bool(self.connected)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Client:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def get(self, path: str, **headers: str) -> tuple[int, str]:
        async with self.session.get(self.base + path, headers=headers) as response:
            return response.status, await response.text()

    async def post(self, path: str, data: bytes, **headers: str) -> int:
        async with self.session.post(
            self.base + path, data=data, headers={"Authorization": basic(KEY), **headers}
        ) as r:
            return r.status

    async def metrics(self, **headers: str) -> dict:
        status, text = await self.get("/metrics", **headers)
        assert status == 200, text
        return samples(text)


async def running(sink: Any, **options: Any):
    runner, port = await serve(create_app(KEYS, sink, **options), "127.0.0.1", 0)
    session = aiohttp.ClientSession()
    return runner, session, Client(f"http://127.0.0.1:{port}", session)


@pytest.fixture
async def app_and_sink():
    sink = FakeSink()
    runner, session, client = await running(sink)
    try:
        yield client, sink
    finally:
        await session.close()
        await runner.cleanup()


async def test_ready_is_503_until_kafka_took_records_and_while_it_is_down(app_and_sink):
    client, sink = app_and_sink
    status, body = await client.get("/ready")
    assert (status, json.loads(body)) == (503, {"ready": False, "kafka": "connecting"})
    assert await client.post("/v1/track", json.dumps(TRACK).encode()) == 200
    status, body = await client.get("/ready")
    assert (status, json.loads(body)) == (200, {"ready": True, "kafka": "connected"})
    sink.up = False
    assert await client.post("/v1/track", json.dumps(TRACK).encode()) == 503
    status, body = await client.get("/ready")
    assert (status, json.loads(body)) == (503, {"ready": False, "kafka": "unreachable"})
    assert (await client.metrics())[("cs_relay_ingest_kafka_ready", ())] == 0
    sink.up = True
    assert await client.post("/v1/track", json.dumps(TRACK).encode()) == 200
    assert (await client.get("/ready"))[0] == 200
    assert (await client.metrics())[("cs_relay_ingest_kafka_ready", ())] == 1


async def test_a_sink_without_readiness_counts_as_ready():
    class Plain:
        async def send(self, records: Sequence[Record]) -> None:
            pass

    runner, session, client = await running(Plain())
    try:
        assert (await client.get("/ready"))[0] == 200
        assert (await client.metrics())[("cs_relay_ingest_kafka_ready", ())] == 1
    finally:
        await session.close()
        await runner.cleanup()


async def test_metrics_count_requests_messages_latency_and_bytes(app_and_sink):
    client, sink = app_and_sink
    single = json.dumps(TRACK).encode()
    batch = gzip.compress(json.dumps({"batch": [{**TRACK, "type": "track"}] * 3}).encode())
    assert await client.post("/v1/track", single) == 200
    assert await client.post("/v1/t", single) == 200
    assert await client.post("/v1/batch", batch, **{"Content-Encoding": "gzip"}) == 200
    assert await client.post("/v1/batch", b"{nope") == 400
    assert await client.post("/v1/track", single, Authorization=basic("wrong")) == 401
    assert await client.post("/v1/purchase", single) == 404
    assert (await client.get("/v1/track"))[0] == 405
    sink.up = False
    assert await client.post("/v1/track", single) == 503
    assert (await client.get("/health"))[0] == 200

    m = await client.metrics()
    requests = {labels: v for (name, labels), v in m.items() if name == "cs_relay_ingest_requests_total"}
    assert requests == {
        (("path", "/v1/track"), ("status", "200")): 1,
        (("path", "/v1/t"), ("status", "200")): 1,
        (("path", "/v1/batch"), ("status", "200")): 1,
        (("path", "/v1/batch"), ("status", "400")): 1,
        (("path", "/v1/track"), ("status", "401")): 1,
        (("path", "unmatched"), ("status", "404")): 1,
        (("path", "unmatched"), ("status", "405")): 1,
        (("path", "/v1/track"), ("status", "503")): 1,
        (("path", "/health"), ("status", "200")): 1,
    }
    assert m[("cs_relay_ingest_messages_produced_total", ())] == 5 == len(sink.records)
    assert m[("cs_relay_ingest_produce_seconds_count", (("outcome", "acknowledged"),))] == 3
    assert m[("cs_relay_ingest_produce_seconds_count", (("outcome", "unavailable"),))] == 1
    assert m[("cs_relay_ingest_produce_seconds_bucket", (("le", "+Inf"), ("outcome", "acknowledged")))] == 3
    # Bodies as sent (the batch gzipped); the 401 is refused before its body is read.
    assert m[("cs_relay_ingest_request_body_bytes_count", ())] == 5
    assert m[("cs_relay_ingest_request_body_bytes_sum", ())] == 3 * len(single) + len(batch) + len(b"{nope")
    assert m[("cs_relay_build_info", (("version", streams.__version__),))] == 1
    assert m[("process_resident_memory_bytes", ())] > 1_000_000
    assert any(name == "python_gc_collections_total" for name, _ in m)
    # This scrape is counted after it is answered.
    assert (await client.metrics())[("cs_relay_ingest_requests_total", (("path", "/metrics"), ("status", "200")))] == 1


async def test_metrics_need_the_admin_token_when_set_version_and_ready_do_not():
    sink = FakeSink()
    runner, session, client = await running(sink, admin_token=TOKEN)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000000"}, {"Authorization": basic(KEY)}):
            status, body = await client.get("/metrics", **headers)
            assert status == 401 and json.loads(body)["code"] == "unauthorized" and TOKEN not in body
        assert ("cs_relay_ingest_messages_produced_total", ()) in await client.metrics(Authorization=f"Bearer {TOKEN}")
        status, body = await client.get("/version")
        assert status == 200 and json.loads(body) == {
            "version": streams.__version__,
            "python": platform.python_version(),
            "faust": importlib.metadata.version("faust-streaming"),
            "event_loop": "asyncio",
        }
        assert (await client.get("/ready"))[0] == 503
    finally:
        await session.close()
        await runner.cleanup()


class FakeProducer:
    """What KafkaSink.ready uses of aiokafka's producer: `client.force_metadata_update()`."""

    def __init__(self) -> None:
        self.answer: Any = True  # True / False, or "hang"
        self.checks = 0
        self.hung: list[asyncio.Future] = []
        self.client = self

    def force_metadata_update(self) -> asyncio.Future:
        self.checks += 1
        future = asyncio.get_running_loop().create_future()
        if self.answer == "hang":
            self.hung.append(future)
        else:
            future.set_result(self.answer)
        return future

    async def stop(self) -> None:
        pass


async def test_kafka_sink_readiness_rechecks_a_stale_success_and_bounds_the_check(monkeypatch):
    sink = KafkaSink("127.0.0.1:1", "t", timeout=5)
    producer = FakeProducer()
    sink._producer = producer
    sink._note(True)
    assert await sink.ready() and producer.checks == 0  # a fresh success is taken as it is

    monkeypatch.setattr(ingest_mod, "READY_RECHECK_SECONDS", 0.0)  # now every success is stale
    producer.answer = False  # no broker answered the metadata request
    assert not await sink.ready() and producer.checks == 1 and sink.connected is False
    producer.answer = True
    assert await sink.ready() and producer.checks == 2 and sink.connected is True

    monkeypatch.setattr(ingest_mod, "READY_PROBE_TIMEOUT", 0.05)
    producer.answer = "hang"
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.gather(sink.ready(), sink.ready()) == [False, False]
    assert loop.time() - started < 1.0
    assert producer.checks == 3  # one check for both callers, still running
    producer.hung[-1].set_result(True)  # the broker answers at last: the check records it
    await asyncio.wait_for(sink._check, 1)
    assert sink.connected is True


@pytest.mark.e2e
async def test_ready_follows_the_real_broker_without_traffic(tmp_path, monkeypatch):
    """Through a real broker: 503 before the producer connected, 200 once it has (no
    request needed), 503 soon after the broker dies although nothing was sent."""
    monkeypatch.setattr(ingest_mod, "READY_RECHECK_SECONDS", 0.2)
    kafka = await asyncio.to_thread(LocalKafka(port=0, data_dir=tmp_path / "kafka").start, 60)
    sink = KafkaSink(kafka.bootstrap_servers, "ready-topic", timeout=2)
    runner, session, client = await running(sink)
    try:

        async def ready_status() -> int:
            return (await client.get("/ready"))[0]

        assert sink.connected is None
        assert await wait_for_status(ready_status, 200, seconds=30)  # /ready itself connects the producer
        assert (await client.metrics())[("cs_relay_ingest_kafka_ready", ())] == 1
        await asyncio.to_thread(kafka.kill)
        assert await wait_for_status(ready_status, 503, seconds=30)
        assert (await client.metrics())[("cs_relay_ingest_kafka_ready", ())] == 0
    finally:
        await session.close()
        await runner.cleanup()
        await sink.stop()
        await asyncio.to_thread(kafka.kill)


async def wait_for_status(get: Any, want: int, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await get() == want:
            return True
        await asyncio.sleep(0.1)
    return False
