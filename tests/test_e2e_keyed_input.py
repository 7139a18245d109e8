"""End to end with CS_RELAY_INPUT_KEYED_BY_USER: an input topic keyed by user (as
`cs-relay send` writes it) is routed where it is, through the real broker, a worker
process and both mock partners; only a record outside its user's partition takes the
by-user hop."""

from __future__ import annotations

import json

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.partitioner import owner_partition
from streams.runtime.topics import by_user_topic_name
from tests.pipeline import Pipeline

pytestmark = pytest.mark.e2e


def seg(type_: str, user: str, n: int, **fields) -> dict:
    return {"type": type_, "userId": user, "messageId": f"{type_}-{user}-{n}", **fields}


async def test_a_keyed_input_topic_is_routed_in_place_and_a_misplaced_record_rekeyed(pipeline: Pipeline):
    admin = AIOKafkaAdminClient(**pipeline.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(pipeline.input_topic, pipeline.partitions, 1)])
    finally:
        await admin.close()
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
