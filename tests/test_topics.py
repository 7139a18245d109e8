"""Topic set-up against the real broker: created when missing, refused when the
partition count of a co-partitioned topic disagrees with the configuration."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.core.pendingrows import INDEX_MAX_BYTES
from streams.runtime.topiclist import backfill_topic_name, leader_topic_name, topic_list
from streams.runtime.topics import (
    DLQ_MAX_MESSAGE_BYTES,
    RECORD_LIMIT,
    TopicMismatch,
    TopicRefused,
    ensure_topics,
)
from streams.settings import Settings

pytestmark = pytest.mark.e2e


def settings_for(bootstrap: str, app_id: str, partitions: int, **more: str) -> Settings:
    return Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CS_RELAY_APP_ID": app_id,
            "CS_RELAY_INPUT_TOPIC": f"{app_id}-in",
            "CS_RELAY_DLQ_TOPIC": f"{app_id}-dlq",
            "CS_RELAY_TOPIC_PARTITIONS": str(partitions),
            **more,
        }
    )


async def topic_configs(bootstrap: str, topics: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """{topic: {config name: value}} for the given config names, as the broker has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, configs=dict.fromkeys(names)) for t in topics]
        )
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _, _, name, entries in response.resources:
            assert error_code == 0, (name, error_code)
            out[name] = {entry[0]: entry[1] for entry in entries if entry[0] in names}
    return out


async def describe(bootstrap: str, topics: list[str]) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: t for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def wait_listed(bootstrap: str, topic: str, timeout: float = 10.0) -> None:
    """Until the broker lists a topic just created (its metadata spreads asynchronously)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while topic not in await admin.list_topics():
            assert asyncio.get_running_loop().time() < deadline, f"{topic} never listed"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def create_topic(bootstrap: str, topic: NewTopic) -> None:
    """Create a topic as someone else would have, and wait until the broker lists it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([topic])
    finally:
        await admin.close()
    await wait_listed(bootstrap, topic.name)


async def test_missing_topics_are_created_with_the_configured_partitions(kafka_bootstrap):
    app_id = f"topics-{uuid.uuid4().hex[:8]}"
    settings = settings_for(kafka_bootstrap, app_id, 3)
    assert set((await ensure_topics(settings)).values()) == {"created"}
    names = [t.name for t in topic_list(settings)]
    leader = leader_topic_name(app_id)
    # input, by-user, the changelogs of users, pending, groups, seen, windows, waiters,
    # payloads, dead letters, backfill's record, and Faust's assignor topic
    assert len(names) == 14 and names[-1] == leader
    topics = await describe(kafka_bootstrap, names)
    partitions = {name: len(t["partitions"]) for name, t in topics.items()}
    assert partitions == {name: 1 if name in (leader, backfill_topic_name(app_id)) else 3 for name in names}
    configs = await topic_configs(kafka_bootstrap, names, ["cleanup.policy", "max.message.bytes"])
    # Changelogs are compacted, as Faust makes them; dead letters get room for a whole
    # input record plus headers; every topic has its record limit set, not left to the
    # broker's default.
    policies = {name: c["cleanup.policy"] for name, c in configs.items()}
    compacted = [n for n in names if n.endswith("-changelog") or n == backfill_topic_name(app_id)]
    assert policies == {name: "compact" if name in compacted else "delete" for name in names}
    limits = {name: int(c["max.message.bytes"]) for name, c in configs.items()}
    assert limits == {name: DLQ_MAX_MESSAGE_BYTES if name.endswith("-dlq") else RECORD_LIMIT for name in names}
    assert DLQ_MAX_MESSAGE_BYTES > 4 * 1024 * 1024 and RECORD_LIMIT > INDEX_MAX_BYTES
    assert set((await ensure_topics(settings)).values()) == {"exists"}  # again: nothing to do


async def test_a_topic_the_broker_refuses_to_create_stops_start_up_with_the_reason(kafka_bootstrap):
    """One broker cannot hold two copies: the refusal is reported per topic, with the
    setting that caused it, not as an unreachable broker after a timeout."""
    app_id = f"topics-{uuid.uuid4().hex[:8]}"
    with pytest.raises(TopicRefused) as info:
        await ensure_topics(settings_for(kafka_bootstrap, app_id, 2, CS_RELAY_TOPIC_REPLICATION_FACTOR="2"))
    message = str(info.value)
    assert f"'{app_id}-in': InvalidReplicationFactorError" in message, message
    assert "CS_RELAY_TOPIC_REPLICATION_FACTOR=2" in message


async def test_a_co_partitioned_topic_with_another_count_is_refused_by_name(kafka_bootstrap):
    app_id = f"topics-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, NewTopic(f"{app_id}-users-changelog", 4, 1))
    with pytest.raises(TopicMismatch) as info:
        await ensure_topics(settings_for(kafka_bootstrap, app_id, 2))
    message = str(info.value)
    assert f"{app_id}-users-changelog" in message and "4 partitions" in message
    assert "CS_RELAY_TOPIC_PARTITIONS=4" in message

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CS_RELAY_APP_ID": app_id,
        "CS_RELAY_TOPIC_PARTITIONS": "2",
        "PATH": "/usr/bin:/bin",
    }
    worker = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 2
    assert "CS_RELAY_TOPIC_PARTITIONS=4" in worker.stderr
    # Checking created nothing: the other co-partitioned topics are still missing.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert f"{app_id}-by-user" not in await admin.list_topics()
    finally:
        await admin.close()


async def test_an_input_topic_said_to_be_keyed_by_user_must_have_the_by_user_partition_count(kafka_bootstrap):
    """CS_RELAY_INPUT_KEYED_BY_USER routes input records in their partition: with
    another count than the by-user topic, a user's input partition would not be theirs."""
    app_id = f"topics-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, NewTopic(f"{app_id}-in", 3, 1))
    await ensure_topics(settings_for(kafka_bootstrap, app_id, 2))  # without the setting: any count
    keyed = settings_for(kafka_bootstrap, f"{app_id}-k", 2, CS_RELAY_INPUT_TOPIC=f"{app_id}-in")
    assert not keyed.input_keyed_by_user
    keyed = settings_for(
        kafka_bootstrap, f"{app_id}-k", 2, CS_RELAY_INPUT_TOPIC=f"{app_id}-in", CS_RELAY_INPUT_KEYED_BY_USER="true"
    )
    with pytest.raises(TopicMismatch) as info:
        await ensure_topics(keyed)
    message = str(info.value)
    assert f"'{app_id}-in' has 3 partitions" in message and "CS_RELAY_INPUT_KEYED_BY_USER" in message, message
    assert "give the input topic 2 partitions" in message
    # Created with the by-user count when missing, it is accepted.
    fresh = settings_for(kafka_bootstrap, f"{app_id}-f", 2, CS_RELAY_INPUT_KEYED_BY_USER="true")
    await ensure_topics(fresh)
    assert len((await describe(kafka_bootstrap, [f"{app_id}-f-in"]))[f"{app_id}-f-in"]["partitions"]) == 2


async def test_a_topic_that_allows_smaller_records_than_cs_relay_writes_is_refused_by_name(kafka_bootstrap):
    """A changelog created by hand with a 100 KB record limit would refuse a user's
    pending index row at its bound: start-up says so, naming the topic and the config."""
    app_id = f"topics-{uuid.uuid4().hex[:8]}"
    await create_topic(
        kafka_bootstrap, NewTopic(f"{app_id}-pending-changelog", 2, 1, topic_configs={"max.message.bytes": "102400"})
    )
    with pytest.raises(TopicRefused) as info:
        await ensure_topics(settings_for(kafka_bootstrap, app_id, 2))
    message = str(info.value)
    assert f"'{app_id}-pending-changelog'" in message and "max.message.bytes=102400" in message, message
    assert str(RECORD_LIMIT) in message
