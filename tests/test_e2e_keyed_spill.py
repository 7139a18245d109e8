"""End to end with CS_RELAY_INPUT_KEYED_BY_USER and the fairness spill: after a restart,
a user's spilled deliveries wait for the user's older calls that are read again from the
input topic (streams.runtime.inputcatchup), through the real broker, worker processes
and the ClientSuccess mock."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.partitioner import owner_partition
from streams.runtime.topiclist import SPILLROWS, changelog_name
from tests.pipeline import Pipeline

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(300)]

HOLD_MS = 60_000, 4000  # the latency of a "Hold" event at ClientSuccess, for the first worker and the next
KEYED = {"CS_RELAY_INPUT_KEYED_BY_USER": "true", "CS_RELAY_USER_SHARE": "1"}


def users_of(partition: int, partitions: int, prefix: str, n: int) -> list[str]:
    return [u for u in (f"{prefix}{i}" for i in range(10_000)) if owner_partition(u, partitions) == partition][:n]


def track(user: str, event: str) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": event, "messageId": f"{user}-{event}"}


def group(user: str) -> dict[str, Any]:
    return {
        "type": "group",
        "userId": user,
        "groupId": f"org-{user}",
        "traits": {"name": user},
        "messageId": f"{user}-g",
    }


async def test_with_keyed_input_a_spilled_queue_drains_after_the_older_calls_read_again(pipeline: Pipeline):
    """u's Hold0 is on its way (slow partner), u's E1-E5 spill behind it (share 1), and v's
    Hold call before them all keeps the partition's committed offset back. The worker is
    killed once the spilled rows are in Kafka. The next one reads the input partition again from v's call, its
    unacknowledged window (64 KB) filled behind v's call (held again by the partner) with
    the 200 calls after it, while its by-user partition catches up at once: u's spilled
    queue must wait for Hold0, read again after them, and ClientSuccess gets u's events
    in order."""
    admin = AIOKafkaAdminClient(**pipeline.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(pipeline.input_topic, pipeline.partitions, 1)])
    finally:
        await admin.close()
    u, v = users_of(0, pipeline.partitions, "spill", 2)
    fillers = users_of(0, pipeline.partitions, "fill", 200)  # no group call: their tracks are held
    hold = f"/collector/1.0.0/projects/{quote(pipeline.worker_env()['CLIENTSUCCESS_SOURCE_ID'])}/events/Hold"
    await pipeline.fault("cs", latency_ms=HOLD_MS[0], path_prefix=hold)

    first = pipeline.start_worker(**KEYED)
    await pipeline.wait_ready(first)  # its topics made (reading a changelog before would create it)
    await pipeline.send(group(u), group(v), track(v, "Hold"), *(track(f, "F") for f in fillers))
    await pipeline.send(track(u, "Hold0"), *(track(u, f"E{i}") for i in range(1, 6)))

    async def spilled() -> int:  # ClientSuccess's spilled bodies of u's in Kafka
        rows = await pipeline.records(changelog_name(pipeline.name, SPILLROWS))
        return sum(1 for value, _ in rows if value and b"/collector/" in value and u.encode() in value)

    await pipeline.eventually(spilled, lambda n: n >= 5, timeout=60, what="u's E1-E5 spilled")
    first.kill()  # Hold and Hold0 unanswered: nothing acknowledged past Hold
    restarted = datetime.now().astimezone()
    await pipeline.clear_faults("cs")
    await pipeline.fault("cs", latency_ms=HOLD_MS[1], path_prefix=hold)

    pipeline.start_worker(**KEYED, CS_RELAY_MAX_UNACKED_BYTES=str(64 * 1024))

    def of_u(requests: list[dict[str, Any]]) -> list[str]:
        mine = [
            r
            for r in requests
            if (r.get("json") or {}).get("identity", {}).get("user", {}).get("id") == u
            and datetime.fromisoformat(r["received_at"]) > restarted
        ]
        return [r["path"].rsplit("/", 1)[-1] for r in sorted(mine, key=lambda r: r["received_at"])]

    every = {"Hold0", *(f"E{i}" for i in range(1, 6))}
    sent = await pipeline.eventually(
        pipeline.cs_requests, lambda rs: every <= set(of_u(rs)), timeout=90, what="u's six"
    )
    order = of_u(sent)
    firsts = sorted(set(order), key=order.index)
    assert firsts == ["Hold0", "E1", "E2", "E3", "E4", "E5"], order
