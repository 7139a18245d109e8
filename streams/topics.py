"""The external topics cs-relay reads and writes, created when missing.

Faust creates its own internal topics (the by-user topic, table changelogs). The input
and dead-letter topics belong to the deployment: `ensure_topics` creates them with the
configured partition count when they do not exist, and refuses to start when an
existing input topic has a different count (keys would be routed differently from
what the tables expect).
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


class TopicMismatch(RuntimeError):
    pass


async def ensure_topics(settings: Settings, replication_factor: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        wanted = {settings.input_topic: settings.topic_partitions, settings.dlq_topic: settings.topic_partitions}
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, n, replication_factor) for t, n in wanted.items() if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        described = await admin.describe_topics([settings.input_topic])
        for topic in described:
            count = len(topic.get("partitions") or [])
            if topic.get("topic") == settings.input_topic and count and count != settings.topic_partitions:
                raise TopicMismatch(
                    f"topic {settings.input_topic!r} has {count} partitions but CS_RELAY_TOPIC_PARTITIONS is "
                    f"{settings.topic_partitions}; set CS_RELAY_TOPIC_PARTITIONS={count} or recreate the topic"
                )
    finally:
        await admin.close()
