"""The external topics cs-relay reads and writes, created when missing.

Faust creates its own internal topics (the by-user topic, table changelogs). The input
and dead-letter topics belong to the deployment: `ensure_topics` creates them with the
configured partition count when they do not exist. The input topic may have any
partition count (`intake` re-keys every message by user), unless
CS_RELAY_INPUT_KEYED_BY_USER says it is keyed by user: then it must have
CS_RELAY_TOPIC_PARTITIONS, like the by-user topic whose hop it skips. The by-user topic and the
table changelogs must agree with CS_RELAY_TOPIC_PARTITIONS, because a user's state
lives in the changelog partition with the same number as their by-user partition:
start-up is refused, naming the topic, when an existing one has a different count.
CS_RELAY_TOPIC_PARTITIONS is therefore also the most workers that can share the work.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.kafkaconn import start_client
from streams.settings import Settings

DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024 + 64 * 1024
# max.message.bytes of every other topic cs-relay creates, set explicitly rather than
# left to the broker's default. What cs-relay writes stays well below it: a message is
# at most 32 KB (streams.core.segment), a pending index row at most 900 KB
# (streams.core.pendingrows), a hand-over of a visitor's profile at most
# HANDOVER_MAX_BYTES (streams.runtime.merge).
RECORD_LIMIT = 1024 * 1024
DLQ_MIN_BYTES = 128 * 1024  # the least a dead-letter topic found must take


class TopicProblem(RuntimeError):
    """A topic cs-relay needs cannot be used as configured (the message says why)."""


class TopicMismatch(TopicProblem):
    pass


class TopicRefused(TopicProblem):
    pass


def creation_errors(topic_errors: list[tuple]) -> list[str]:
    """What a CreateTopics response refused, one sentence per topic. A topic that
    exists already (created meanwhile by another worker) is no error, nor is a
    retriable one (a timeout, a controller move): the creation may still complete, and
    the wait for the topics to be listed decides. Entries are (topic, error_code) or
    (topic, error_code, error_message), by protocol version."""
    out = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        if code == 0 or code == TopicAlreadyExistsError.errno or for_code(code).retriable:
            continue
        detail = entry[2] if len(entry) > 2 and entry[2] else ""
        out.append(f"{name!r}: {for_code(code).__name__}" + (f" ({detail})" if detail else ""))
    return out


BY_USER = "by-user"
# The topics whose partitions must match CS_RELAY_TOPIC_PARTITIONS: a user's records
# and their table rows are found by partition number.
CO_PARTITIONED = (
    BY_USER,
    "users-changelog",
    "pending-changelog",
    "seen-changelog",
    "groups-changelog",
    "windows-changelog",
    "waiters-changelog",
    "payloads-changelog",
)


def by_user_topic_name(app_id: str) -> str:
    """The internal topic intake re-keys every call to, by user (`{app_id}-by-user`)."""
    return f"{app_id}-{BY_USER}"


async def _check_partitions(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    # Describe only topics that exist: describing a missing one can make a broker with
    # auto.create.topics.enable create it, with the broker's default partition count.
    existing = set(await admin.list_topics())
    names = co_partitioned(settings)
    if settings.input_keyed_by_user:
        names.append(settings.input_topic)
    present = [name for name in names if name in existing]
    for topic in await admin.describe_topics(present) if present else ():
        if topic.get("error_code"):
            continue
        count = len(topic.get("partitions") or [])
        if count and count != settings.topic_partitions and topic.get("topic") == settings.input_topic:
            raise TopicMismatch(
                f"the input topic {settings.input_topic!r} has {count} partitions but CS_RELAY_TOPIC_PARTITIONS is "
                f"{settings.topic_partitions}; CS_RELAY_INPUT_KEYED_BY_USER=true routes each input record in its "
                f"partition, which must be its user's by-user partition: unset CS_RELAY_INPUT_KEYED_BY_USER (every "
                f"record then takes the re-keying hop), or give the input topic {settings.topic_partitions} partitions"
            )
        if count and count != settings.topic_partitions:
            raise TopicMismatch(
                f"topic {topic.get('topic')!r} has {count} partitions but CS_RELAY_TOPIC_PARTITIONS is "
                f"{settings.topic_partitions}; a user's state is found by partition number, so set "
                f"CS_RELAY_TOPIC_PARTITIONS={count}, or start under a new CS_RELAY_APP_ID to repartition"
            )


def record_limits(settings: Settings) -> dict[str, int]:
    """The record limit (max.message.bytes) each topic cs-relay creates is given."""
    limits = {name: RECORD_LIMIT for name in (settings.input_topic, *co_partitioned(settings))}
    limits[settings.dlq_topic] = DLQ_MAX_MESSAGE_BYTES
    return limits


def least_limits(settings: Settings) -> dict[str, int]:
    """The record limit a topic cs-relay writes must allow when it finds it. The input
    topic is the deployment's and only read: not checked. A dead letter the topic
    refuses is written again cut to its first 64 KB (streams.runtime.effects), so a
    dead-letter topic needs less than it is created with."""
    return {**dict.fromkeys(co_partitioned(settings), RECORD_LIMIT), settings.dlq_topic: DLQ_MIN_BYTES}


def co_partitioned(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-{suffix}" for suffix in CO_PARTITIONED]


async def _check_record_limits(admin: AIOKafkaAdminClient, settings: Settings, names: list[str]) -> None:
    """Refuse to start on a topic (created by someone else) whose max.message.bytes is
    below what cs-relay may write to it: its records would be refused one by one, each
    stopping the worker, instead of once here (`least_limits`)."""
    wanted = {name: limit for name, limit in least_limits(settings).items() if name in names}
    if not wanted:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": None}) for name in wanted]
    small = []
    for response in await admin.describe_configs(resources):
        for error_code, _, _, name, entries in response.resources:
            values = {entry[0]: entry[1] for entry in entries}
            if error_code or "max.message.bytes" not in values:
                continue
            allowed = int(values["max.message.bytes"])
            if allowed < wanted[name]:
                small.append(f"{name!r} has max.message.bytes={allowed}, cs-relay needs at least {wanted[name]}")
    if small:
        raise TopicRefused(
            "; ".join(small) + " (raise it with kafka-configs.sh --alter --entity-type topics --entity-name "
            "<topic> --add-config max.message.bytes=<bytes>)"
        )


async def _until_listed(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Wait until the broker lists topics just created (metadata spreads asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not set(names) <= set(await admin.list_topics()):
        if loop.time() > deadline:
            raise TimeoutError(f"Kafka did not list the new topics {names} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def ensure_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_client(admin, settings.kafka_security, settings.kafka_bootstrap_servers)
    try:
        # The by-user topic too: when workers start together, a topic that Faust
        # creates while their group forms can be missed by the first assignment,
        # leaving every worker without it until the next metadata refresh.
        # The table changelogs likewise (compacted, as Faust would make them): a
        # worker's first assignment could miss one Faust had only just created.
        wanted = {
            settings.input_topic: settings.topic_partitions,
            settings.dlq_topic: settings.topic_partitions,
            **dict.fromkeys(co_partitioned(settings), settings.topic_partitions),
        }
        await _check_partitions(admin, settings)  # before creating anything
        existing = set(await admin.list_topics())
        # Every topic with its record limit set (dead letters carry the original bytes
        # plus headers: more room); changelogs compacted, as Faust would make them.
        configs = {name: {"max.message.bytes": str(limit)} for name, limit in record_limits(settings).items()}
        for name in co_partitioned(settings):
            if name.endswith("-changelog"):
                configs[name]["cleanup.policy"] = "compact"
        missing = [
            NewTopic(t, n, settings.topic_replication_factor, topic_configs=configs.get(t, {}))
            for t, n in wanted.items()
            if t not in existing
        ]
        if missing:
            # The broker answers per topic; aiokafka raises for none of those errors.
            response = await admin.create_topics(missing)
            refused = creation_errors(response.topic_errors)
            if refused:
                raise TopicRefused(
                    "Kafka refused to create " + "; ".join(refused) + f" (CS_RELAY_TOPIC_PARTITIONS="
                    f"{settings.topic_partitions}, "
                    f"CS_RELAY_TOPIC_REPLICATION_FACTOR={settings.topic_replication_factor})"
                )
            await _until_listed(admin, [t.name for t in missing])
            # Workers starting together race to create them: if another one, configured
            # differently, won, its partition count is the one that counts.
            await _check_partitions(admin, settings)
        await _check_record_limits(admin, settings, list(wanted))
    finally:
        await admin.close()
