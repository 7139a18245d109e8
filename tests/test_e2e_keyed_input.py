"""End to end with CS_RELAY_INPUT_KEYED_BY_USER: an input topic keyed by user (as
`cs-relay send` writes it) is routed where it is, through the real broker, a worker
process and both mock partners; only a record outside its user's partition takes the
by-user hop. After a restart, a user's spilled deliveries wait for the user's older
calls read again from the input topic (`faults`: a minute)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.partitioner import owner_partition
from streams.runtime.topiclist import SPILLROWS, changelog_name
from streams.runtime.topics import by_user_topic_name
from tests.pipeline import Pipeline

pytestmark = pytest.mark.e2e


def seg(type_: str, user: str, n: int, **fields) -> dict:
    return {"type": type_, "userId": user, "messageId": f"{type_}-{user}-{n}", **fields}


async def keyed_input_topic(pipeline: Pipeline) -> None:
    """The input topic, made before any worker with the by-user topic's partition count."""
    admin = AIOKafkaAdminClient(**pipeline.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(pipeline.input_topic, pipeline.partitions, 1)])
    finally:
        await admin.close()


async def test_a_keyed_input_topic_is_routed_in_place_and_a_misplaced_record_rekeyed(pipeline: Pipeline):
    await keyed_input_topic(pipeline)
    pipeline.start_worker(CS_RELAY_INPUT_KEYED_BY_USER="true")
    users = [f"k{i}" for i in range(6)]
    # Each user: two tracks held before their group call, then the group, then one more.
    for user in users:
        await pipeline.send(
            seg("track", user, 1, event="Early"),
            seg("track", user, 2, event="Early"),
            seg("group", user, 3, groupId=f"org-{user}", traits={"name": user}),
            seg("track", user, 4, event="After"),
        )
    await pipeline.send(b'{"type": "track", "userId": "k0"}')  # no event name: a dead letter
    # A producer that put a record in another partition than its user's.
    misplaced = seg("track", "k1", 5, event="Misplaced")
    producer = await pipeline.producer()
    other = (owner_partition("k1", pipeline.partitions) + 1) % pipeline.partitions
    await (await producer.send(pipeline.input_topic, json.dumps(misplaced).encode(), key=b"k1", partition=other))

    def all_there(state: dict) -> bool:
        orgs = state["organizations"]
        return all(len(orgs.get(f"org-{u}", {}).get("events", [])) == (4 if u == "k1" else 3) for u in users)

    cs = await pipeline.eventually(pipeline.cs_state, all_there, what="every user's events at ClientSuccess")
    for user in users:
        events = [e["event"] for e in cs["organizations"][f"org-{user}"]["events"]]
        # The misplaced record is read from another partition: its place among k1's is open.
        assert [e for e in events if e != "Misplaced"] == ["Early", "Early", "After"], (user, events)
        assert events.count("Misplaced") == (1 if user == "k1" else 0)
    [(bad, headers)] = await pipeline.eventually(pipeline.dead_letters, lambda d: len(d) == 1, what="one dead letter")
    assert headers["cs-relay-reason"] == "missing_field" and headers["cs-relay-stage"] == "intake"
    # Only the misplaced record was copied to the by-user topic (the rest there are
    # control records: pending-done for the released events).
    by_user = await pipeline.records(by_user_topic_name(pipeline.name))
    copies = [json.loads(value) for value, headers in by_user if "cs-relay-kind" not in headers]
    assert [c["messageId"] for c in copies] == ["track-k1-5"]


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


@pytest.mark.faults  # a minute: two workers' starts, and the partner's held answers
@pytest.mark.timeout(300)
async def test_with_keyed_input_a_spilled_queue_drains_after_the_older_calls_read_again(pipeline: Pipeline):
    """u's Hold0 is on its way (slow partner), u's E1-E5 spill behind it (share 1), and v's
    Hold call before them all keeps the partition's committed offset back. The worker is
    killed once the spilled rows are in Kafka. The next one reads the input partition again from v's call, its
    unacknowledged window (64 KB) filled behind v's call (held again by the partner) with
    the 200 calls after it, while its by-user partition catches up at once: u's spilled
    queue must wait for Hold0, read again after them, and ClientSuccess gets u's events
    in order."""
    await keyed_input_topic(pipeline)
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
