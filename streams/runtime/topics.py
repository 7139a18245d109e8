"""The topics cs-relay needs, created when missing and checked when found.

The list is `streams.runtime.topiclist.topic_list(settings)`: the input and dead-letter
topics, the by-user topic, the table changelogs and Faust's assignor topic.
`ensure_topics` (the worker at start-up, `cs-relay topics --create`) creates the
missing ones with their partition count and configs, and refuses to go on, naming the
topic, when one found cannot be used: `survey` (also `cs-relay check`, which creates
nothing) reads what the broker has. The input topic may have any partition count
(`intake` re-keys every message by user), unless CS_RELAY_INPUT_KEYED_BY_USER says it is
keyed by user: then it must have CS_RELAY_TOPIC_PARTITIONS, like the by-user topic
whose hop it skips. The by-user topic and the table changelogs must agree with
CS_RELAY_TOPIC_PARTITIONS, because a user's state lives in the changelog partition with
the same number as their by-user partition. CS_RELAY_TOPIC_PARTITIONS is therefore also
the most workers that can share the work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.kafkaconn import start_client
from streams.runtime.topiclist import (
    BY_USER,
    DLQ_MAX_MESSAGE_BYTES,
    DLQ_MIN_BYTES,
    RECORD_LIMIT,
    Topic,
    by_user_topic_name,
    co_partitioned,
    topic_list,
)
from streams.settings import Settings

__all__ = [
    "BY_USER",
    "DLQ_MAX_MESSAGE_BYTES",
    "DLQ_MIN_BYTES",
    "RECORD_LIMIT",
    "Found",
    "TopicMismatch",
    "TopicProblem",
    "TopicRefused",
    "by_user_topic_name",
    "co_partitioned",
    "ensure_topics",
    "survey",
]

CONFIGS = ("cleanup.policy", "max.message.bytes", "retention.ms")


class TopicProblem(RuntimeError):
    """A topic cs-relay needs cannot be used as configured (the message says why)."""


class TopicMismatch(TopicProblem):
    pass


class TopicRefused(TopicProblem):
    pass


@dataclass(frozen=True)
class Found:
    """A topic as the broker has it: partition count and the configs in `CONFIGS`."""

    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    # Why the broker did not describe its configs (e.g. TopicAuthorizationFailedError:
    # no DescribeConfigs ACL); empty when it did.
    config_error: str = ""


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


def partition_problem(settings: Settings, found: dict[str, Found], topics: list[Topic] | None = None) -> str | None:
    """Why a topic found has a partition count cs-relay cannot use, or None."""
    for topic in topics if topics is not None else topic_list(settings):
        count = found[topic.name].partitions if topic.name in found else 0
        if not topic.fixed or not count or count == topic.partitions:
            continue
        if topic.name == settings.input_topic:
            return (
                f"the input topic {settings.input_topic!r} has {count} partitions but CS_RELAY_TOPIC_PARTITIONS is "
                f"{settings.topic_partitions}; CS_RELAY_INPUT_KEYED_BY_USER=true routes each input record in its "
                f"partition, which must be its user's by-user partition: unset CS_RELAY_INPUT_KEYED_BY_USER (every "
                f"record then takes the re-keying hop), or give the input topic {settings.topic_partitions} partitions"
            )
        return (
            f"topic {topic.name!r} has {count} partitions but CS_RELAY_TOPIC_PARTITIONS is "
            f"{settings.topic_partitions}; a user's state is found by partition number, so set "
            f"CS_RELAY_TOPIC_PARTITIONS={count}, or start under a new CS_RELAY_APP_ID to repartition"
        )
    return None


def limit_problems(settings: Settings, found: dict[str, Found], topics: list[Topic] | None = None) -> list[str]:
    """A topic found (created by someone else) whose max.message.bytes is below what
    cs-relay may write to it: its records would be refused one by one, each stopping the
    worker, instead of once at start-up. The input topic is only read: not checked. A
    dead letter the topic refuses is written again cut to its first 64 KB
    (streams.runtime.effects), so a dead-letter topic needs less than it is created with."""
    small = []
    for topic in topics if topics is not None else topic_list(settings):
        value = found[topic.name].configs.get("max.message.bytes") if topic.name in found else None
        if topic.least_bytes is None or value is None:
            continue
        if int(value) < topic.least_bytes:
            small.append(f"{topic.name!r} has max.message.bytes={value}, cs-relay needs at least {topic.least_bytes}")
    return small


def policy_problems(settings: Settings, found: dict[str, Found], topics: list[Topic] | None = None) -> list[str]:
    """A changelog found that is not compacted loses table rows to retention."""
    out = []
    for topic in topics if topics is not None else topic_list(settings):
        policy = found[topic.name].configs.get("cleanup.policy") if topic.name in found else None
        if topic.cleanup == "compact" and policy is not None and "compact" not in policy.split(","):
            out.append(f"{topic.name!r} has cleanup.policy={policy}, a changelog needs compact")
    return out


RAISE_LIMIT = (
    " (raise it with kafka-configs.sh --alter --entity-type topics --entity-name "
    "<topic> --add-config max.message.bytes=<bytes>)"
)


async def survey(admin: AIOKafkaAdminClient, settings: Settings, topics: list[Topic] | None = None) -> dict[str, Found]:
    """The topics of the list that exist, with their partition counts and configs.
    Only topics that exist are described: describing a missing one can make a broker
    with auto.create.topics.enable create it, with the broker's default partition count."""
    existing = set(await admin.list_topics())
    listed = topics if topics is not None else topic_list(settings)
    present = [t.name for t in listed if t.name in existing]
    if not present:
        return {}
    counts = {}
    for topic in await admin.describe_topics(present):
        if not topic.get("error_code"):
            counts[topic.get("topic")] = len(topic.get("partitions") or [])
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(CONFIGS)) for name in present]
    configs: dict[str, dict[str, str]] = {}
    errors: dict[str, str] = {}
    for response in await admin.describe_configs(resources):
        for error_code, _, _, name, entries in response.resources:
            if error_code:
                errors[name] = for_code(error_code).__name__
            else:
                configs[name] = {entry[0]: entry[1] for entry in entries if entry[0] in CONFIGS}
    return {name: Found(counts.get(name, 0), configs.get(name, {}), errors.get(name, "")) for name in present}


async def _until_listed(admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Wait until the broker lists topics just created (metadata spreads asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not set(names) <= set(await admin.list_topics()):
        if loop.time() > deadline:
            raise TimeoutError(f"Kafka did not list the new topics {names} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


def _new_topic(topic: Topic, settings: Settings) -> NewTopic:
    return NewTopic(topic.name, topic.partitions, settings.topic_replication_factor, topic_configs=topic.configs())


async def ensure_topics(settings: Settings, program: str | None = None) -> dict[str, str]:
    """Create the missing topics and check the others; {topic: "created" or "exists"}.
    `program` (the worker's start-up): only the topics it reads or writes, for which its
    ACLs let it; None (`cs-relay topics --create`): every topic. Raises `TopicProblem`
    naming a topic that cannot be used, before creating anything when an existing one
    has the wrong partition count."""
    topics = [t for t in topic_list(settings) if program is None or program in (*t.readers, *t.writers)]
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_client(admin, settings.kafka_security, settings.kafka_bootstrap_servers)
    try:
        # The by-user topic and the changelogs too, though Faust would create them: when
        # workers start together, a topic that Faust creates while their group forms
        # can be missed by the first assignment, leaving every worker without it until
        # the next metadata refresh.
        found = await survey(admin, settings, topics)
        problem = partition_problem(settings, found, topics)
        if problem:
            raise TopicMismatch(problem)
        missing = [t for t in topics if t.name not in found]
        if missing:
            # The broker answers per topic; aiokafka raises for none of those errors.
            response = await admin.create_topics([_new_topic(t, settings) for t in missing])
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
            found = await survey(admin, settings, topics)
            problem = partition_problem(settings, found, topics)
            if problem:
                raise TopicMismatch(problem)
        small = limit_problems(settings, found, topics)
        if small:
            raise TopicRefused("; ".join(small) + RAISE_LIMIT)
    finally:
        await admin.close()
    created = {t.name for t in missing}
    return {t.name: "created" if t.name in created else "exists" for t in topics}
