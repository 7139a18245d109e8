"""`cs-relay topics [--json] [--create]`: every topic cs-relay reads or writes.

The list is `streams.runtime.topiclist.topic_list` for the current settings, the one the
worker creates at start-up; without `--create` nothing talks to Kafka. `--create` does
what `cs-relay worker` does first (`streams.runtime.topics.ensure_topics`): it creates
the missing topics, checks the others (partition counts, record limits) and says, per
topic, whether it was created or found. docs/operations.md and docs/configuration.md
show `render` for the default settings (`python -m devtools.topicdoc`).
"""

from __future__ import annotations

import json

from streams.cli.failures import CommandFailed, run_with_kafka
from streams.runtime.topiclist import Topic, topic_list
from streams.settings import Settings

HEADERS = ("topic", "partitions", "cleanup.policy", "max.message.bytes", "retention", "what")


def rows(topics: list[Topic]) -> list[tuple[str, ...]]:
    return [
        (
            t.name,
            f"{t.partitions}" if t.fixed else f"{t.partitions} (any)",
            t.cleanup,
            str(t.max_message_bytes),
            t.retention,
            t.role,
        )
        for t in topics
    ]


def table(lines: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(line, widths, strict=False)), line[-1]]) for line in lines]


def render(settings: Settings) -> str:
    """What `cs-relay topics` prints."""
    topics = topic_list(settings)
    head = (
        f"{len(topics)} topics for CS_RELAY_APP_ID={settings.app_id} "
        f"(CS_RELAY_TOPIC_PARTITIONS={settings.topic_partitions}, "
        f"CS_RELAY_TOPIC_REPLICATION_FACTOR={settings.topic_replication_factor}):"
    )
    notes = [
        "(any): created with that count; an existing topic may have another.",
        "The others must have exactly that count: a worker refuses to start, naming the topic.",
        "retention: broker default is the broker's log.retention.ms; cs-relay sets no retention.ms.",
    ]
    return "\n".join([head, "", *table([HEADERS, *rows(topics)]), "", *notes])


def as_json(settings: Settings) -> str:
    return json.dumps(
        {
            "replication_factor": settings.topic_replication_factor,
            "topics": [t.as_dict() for t in topic_list(settings)],
        },
        indent=2,
    )


def run(*, create: bool, as_json_output: bool) -> int:
    settings = Settings.from_env()
    if not create:
        print(as_json(settings) if as_json_output else render(settings))
        return 0
    from streams.runtime.topics import TopicProblem, ensure_topics

    try:
        states = run_with_kafka(ensure_topics(settings), settings.kafka_bootstrap_servers)
    except TopicProblem as exc:
        raise CommandFailed(str(exc)) from None
    if as_json_output:
        print(json.dumps(states, indent=2))
        return 0
    for name, state in states.items():
        print(f"{state:<8} {name}")
    created = sum(state == "created" for state in states.values())
    found = len(states) - created
    print(f"{len(states)} topics ready at {settings.kafka_bootstrap_servers}: {created} created, {found} found")
    return 0


def add_parser(sub) -> None:  # sub: argparse's subparsers action
    parser = sub.add_parser(
        "topics",
        help="every topic cs-relay reads or writes: partitions, cleanup policy, record limit, retention",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the missing topics and check the others, as `cs-relay worker` does at start-up",
    )
    parser.set_defaults(run=lambda args: run(create=args.create, as_json_output=args.json))
