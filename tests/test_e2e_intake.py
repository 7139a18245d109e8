"""End to end, for intake: a real Segment SDK through `cs-relay ingest` to both
partners, and a corpus of bad input interleaved with good messages."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.ingest import KafkaSink, create_app, serve
from streams.settings import Secret
from tests.pipeline import Pipeline

pytestmark = pytest.mark.e2e

WRITE_KEY = "e2e-write-key"


async def test_the_segment_sdk_reaches_both_partners_through_ingest(pipeline: Pipeline):
    import segment.analytics as analytics

    sink = KafkaSink(pipeline.bootstrap, pipeline.input_topic, timeout=10)
    runner, port = await serve(create_app([Secret(WRITE_KEY)], sink), "127.0.0.1", 0)
    try:
        pipeline.start_worker()
        errors: list[Exception] = []
        client = analytics.Client(
            WRITE_KEY,
            host=f"http://127.0.0.1:{port}",
            on_error=lambda error, batch: errors.append(error),
            upload_interval=0.05,
            gzip=True,
        )

        def send() -> None:
            client.track("sdk-user", "Before Group", {"value": 2})  # held until the group
            client.identify("sdk-user", {"firstName": "Sam", "lastName": "Dee", "email": "sam@dee.io"})
            client.group("sdk-user", "dee-corp", {"name": "Dee Corp", "account_id": "acc-dee"})
            client.track("sdk-user", "After Group")
            client.page("sdk-user", "Docs", "Install", {"path": "/install"})
            client.shutdown()

        await asyncio.to_thread(send)
        assert errors == []
        # The ingest's own view: ready, and five messages acknowledged by the real broker.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                assert response.status == 200 and await response.json() == {"ready": True, "kafka": "connected"}
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(await response.text())
                    for s in family.samples
                }
        assert metrics[("cs_relay_ingest_messages_produced_total", ())] == 5
        assert (
            sum(
                v
                for (name, labels), v in metrics.items()
                if name == "cs_relay_ingest_requests_total"
                and ("status", "200") in labels
                and dict(labels)["path"] == "/v1/batch"
            )
            >= 1
        )
        assert metrics[("cs_relay_ingest_produce_seconds_count", (("outcome", "unavailable"),))] == 0
        cs = await pipeline.eventually(
            pipeline.cs_state,
            lambda s: len(s["organizations"].get("dee-corp", {}).get("events", [])) == 3,
            what="three events at ClientSuccess",
        )
        org = cs["organizations"]["dee-corp"]
        assert [(e["event"], e["value"]) for e in org["events"]] == [
            ("Before Group", 2),
            ("After Group", 1),
            ("Viewed Install Page", 1),
        ]
        assert org["users"]["sdk-user"] == {"name": "Sam Dee", "email": "sam@dee.io"}
        csb = await pipeline.eventually(
            pipeline.csb_state, lambda s: len(s["events"]) == 2 and len(s["pages"]) == 1, what="CSB calls"
        )
        assert [(e["event"], e["accountId"]) for e in csb["events"]] == [
            ("Before Group", "acc-dee"),
            ("After Group", "acc-dee"),
        ]
        assert csb["accounts"]["acc-dee"]["traits"]["name"] == "Dee Corp"
    finally:
        await runner.cleanup()
        await sink.stop()


def deep(levels: int) -> bytes:
    return (
        b'{"type": "track", "userId": "x", "event": "e", "properties": '
        + b'{"a": ' * levels
        + b"1"
        + b"}" * levels
        + b"}"
    )


# (bytes, the reason the worker must give)
BAD_INPUTS = [
    (b"\xc3\x28 invalid utf-8", "not_utf8"),
    (b'{"type": "track", "userId": "u", "event": "trunc', "invalid_json"),
    (b"[]", "not_an_object"),
    (b"42", "not_an_object"),
    (b"null", "not_an_object"),
    (b'"a string"', "not_an_object"),
    (b'{"type": "track", "userId": "u"}', "missing_field"),
    (b'{"type": "track", "userId": {"id": 17}, "event": "e"}', "wrong_type"),
    (b'{"type": "identify", "userId": "u", "traits": []}', "wrong_type"),
    (
        b'{"type": "track", "userId": "u", "event": "e", "properties": {"blob": "' + b"x" * 1_000_000 + b'"}}',
        "oversized",
    ),
    (deep(200), "too_deep"),
    (b'{"type": "teleport", "userId": "u"}', "unknown_type"),
    (b'{"type": "track", "userId": "u", "event": "e", "timestamp": "yesterday"}', "invalid_timestamp"),
    (b'{"type": "track", "userId": "u", "event": "e", "messageId": "' + b"m" * 101 + b'"}', "message_id_too_long"),
    (b'{"type": "track", "event": "no user"}', "missing_field"),
]


async def test_bad_input_is_dead_lettered_with_its_reason_and_good_input_flows(pipeline: Pipeline):
    worker = pipeline.start_worker()
    good = []
    for n in range(len(BAD_INPUTS)):
        good.append(
            {
                "type": "track",
                "userId": f"good-{n % 3}",
                "event": f"Good {n}",
                "messageId": f"good-{n}",
                "context": {"groupId": "acme"},
            }
        )
    await pipeline.send(
        {"type": "group", "userId": "good-0", "groupId": "acme", "traits": {"name": "Acme"}, "messageId": "g"}
    )
    interleaved: list = []
    for (bad, _), ok in zip(BAD_INPUTS, good, strict=True):
        interleaved += [bad, ok]
    await pipeline.send(*interleaved)

    letters = await pipeline.eventually(
        pipeline.dead_letters, lambda d: len(d) >= len(BAD_INPUTS), what="every bad input in the DLQ", timeout=90
    )
    assert len(letters) == len(BAD_INPUTS)
    got = {value: headers for value, headers in letters}
    for bad, reason in BAD_INPUTS:
        assert bad in got, f"missing dead letter for {bad[:60]!r}"
        assert got[bad]["cs-relay-reason"] == reason, (bad[:60], got[bad])
        assert got[bad]["cs-relay-stage"] == "intake"
        assert got[bad]["cs-relay-detail"]
    cs = await pipeline.eventually(
        pipeline.cs_state,
        lambda s: len(s["organizations"].get("acme", {}).get("events", [])) == len(good),
        what="every good event at ClientSuccess",
    )
    assert sorted(e["event"] for e in cs["organizations"]["acme"]["events"]) == sorted(m["event"] for m in good)
    assert worker.alive
    assert "Traceback" not in worker.log.read_text(errors="replace")


async def test_a_dead_letter_too_large_for_its_topic_keeps_its_head_and_says_so(pipeline: Pipeline):
    """An operator's dead-letter topic may take less than the input topic: the worker
    keeps the first 64 KB of the original bytes, marks the record, and goes on."""
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    pipeline.dlq_topic,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"max.message.bytes": "200000"},
                )
            ]
        )
    finally:
        await admin.close()
    worker = pipeline.start_worker()
    big = b'{"type": "track", "userId": "u", "event": "e", "properties": {"blob": "' + b"x" * 500_000 + b'"}}'
    await pipeline.send(
        big,
        {"type": "track", "userId": "after", "event": "After", "messageId": "after", "context": {"groupId": "acme"}},
        {"type": "group", "userId": "after", "groupId": "acme", "traits": {"name": "Acme"}},
    )
    letters = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) >= 1, what="the dead letter")
    [(value, headers)] = letters
    assert value == big[: 64 * 1024]
    assert headers["cs-relay-reason"] == "oversized"
    assert headers["cs-relay-truncated-from"] == str(len(big))
    await pipeline.eventually(
        pipeline.cs_state,
        lambda s: len(s["organizations"].get("acme", {}).get("events", [])) == 1,
        what="the next event delivered",
    )
    assert worker.alive
    assert "too large for" in worker.log.read_text(errors="replace")
