"""`cs-relay send`, `dlq list --json` and `dlq replay` as processes against the real broker:
what they print, and what arrives in the topics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.core.deadletter import dead_letter_headers
from streams.ops.dlq import read_dead_letters
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SECRET = "csb-key-that-must-not-show"


def cli_env(bootstrap: str, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CS_RELAY_", "CLIENTSUCCESS_", "CSB_", "WEBHOOK_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        CS_RELAY_APP_ID=name,
        CS_RELAY_INPUT_TOPIC=f"{name}-in",
        CS_RELAY_DLQ_TOPIC=f"{name}-dlq",
        CS_RELAY_TOPIC_PARTITIONS="2",
        CSB_API_KEY=SECRET,
        CSB_BASE_URL="http://127.0.0.1:9",
        PYTHONUNBUFFERED="1",
    )
    return env


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def records(settings: Settings, topic: str) -> list:
    """Every record of `topic` now, read the way `dlq list` reads the dead letters."""
    import dataclasses

    return [r async for r in read_dead_letters(dataclasses.replace(settings, dlq_topic=topic))]


async def test_send_list_and_replay(kafka_bootstrap, tmp_path):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    env = cli_env(kafka_bootstrap, name)
    settings = Settings.from_env(env)
    await ensure_topics(settings)

    # send: a file larger than its window, keyed by user, with progress lines (not a terminal)
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(
            json.dumps({"type": "track", "userId": f"u{i % 5}", "event": "e", "messageId": f"m{i}"}) + "\n"
            for i in range(1200)
        )
    )
    sent = await cli(env, "send", str(path), "--in-flight", "100")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == f"sent 1200 messages from {path} to {name}-in\n"
    assert sent.stderr.splitlines()[-1].startswith("sent 1,200, 100%, ")
    arrived = await records(settings, f"{name}-in")
    assert len(arrived) == 1200
    assert {json.loads(r.value)["messageId"] for r in arrived} == {f"m{i}" for i in range(1200)}
    assert all(r.key == json.loads(r.value)["userId"].encode() for r in arrived)

    # dead letters, as the worker writes them
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            headers = dead_letter_headers(
                reason="partner_refused",
                detail="422 from the partner",
                stage="delivery",
                source={"topic": f"{name}-by-user", "partition": 1, "offset": 10 + i},
                destination="customersuccessbox",
                status=422,
            )
            value = json.dumps(
                {
                    "type": "track",
                    "userId": "d1",
                    "messageId": f"d{i}",
                    "writeKey": "wk-123",
                    "properties": {"note": SECRET},
                }
            ).encode()
            await producer.send_and_wait(f"{name}-dlq", value, key=b"d1", headers=list(headers.items()))
        for i in range(2):
            headers = dead_letter_headers(
                reason="invalid_json",
                detail="not JSON",
                stage="intake",
                source={"topic": f"{name}-in", "partition": 0, "offset": i},
            )
            await producer.send_and_wait(f"{name}-dlq", b"{not json", headers=list(headers.items()))
    finally:
        await producer.stop()

    listed = await cli(env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert SECRET not in listed.stdout and "wk-123" not in listed.stdout
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 5
    refused = [row for row in rows if row["reason"] == "partner_refused"]
    assert len(refused) == 3
    first = refused[0]
    assert first["stage"] == "delivery" and first["destination"] == "customersuccessbox" and first["status"] == 422
    assert first["source"]["topic"] == f"{name}-by-user" and first["source"]["partition"] == 1
    assert first["time"].startswith("20") and '"writeKey": "***"' in first["preview"] and "***" in first["preview"]
    bad = [row for row in rows if row["reason"] == "invalid_json"]
    assert len(bad) == 2 and bad[0]["destination"] is None and bad[0]["preview"] == "{not json"
    assert len({(row["partition"], row["offset"]) for row in rows}) == 5  # where each is, to find it again

    replayed = await cli(env, "dlq", "replay", "--reason", "partner_refused", "--batch-size", "2")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == f"replayed 3 dead letter(s) to {name}-in\n"
    assert replayed.stderr.splitlines()[-1].startswith("replayed 3, ")
    everything = await records(settings, f"{name}-in")
    back = [r for r in everything if json.loads(r.value)["messageId"].startswith("d")]
    assert len(everything) == 1203
    assert sorted(json.loads(r.value)["messageId"] for r in back) == ["d0", "d1", "d2"]
    assert all(r.headers.keys() == {"replay", "replay-destination", "replay-of"} for r in back)
    assert all(r.headers["replay"] == "1" and r.headers["replay-destination"] == "customersuccessbox" for r in back)
    # each names its dead letter, so that replaying it again delivers it once
    refused_at = {f"{name}-dlq/{row['partition']}/{row['offset']}" for row in refused}
    assert {r.headers["replay-of"] for r in back} == refused_at
