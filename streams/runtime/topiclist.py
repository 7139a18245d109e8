"""Every topic cs-relay reads or writes, for given settings: the one list.

`topic_list(settings)` names each topic with what it is for, its partition count, cleanup
policy, record limit (`max.message.bytes`) and retention, and which programs read and
write it. The worker's start-up creation (`streams.runtime.topics.ensure_topics`),
`cs-relay topics` (and `--create`), `cs-relay acls`, `cs-relay check` and the topic
lists in docs/operations.md and docs/configuration.md all come from it; the tables of
`streams.runtime.app` are declared under the names in `TABLES`. No I/O here.

The topics: the input topic (the deployment's, created when missing), the by-user topic
(intake re-keys every call to it), one compacted changelog per table, the dead-letter
topic, the compacted record of `cs-relay backfill` (`{app_id}-backfill`), and the topic
Faust's assignor uses to choose the group's leader (`{app_id}-__assignor-__leader`: one
partition, never written to).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Settings

# The Faust tables, in the order streams.runtime.app declares them; each has a changelog
# `{app_id}-{table}-changelog`. `groups` is a GlobalTable (every worker reads all of it).
TABLES = ("users", "pending", "groups", "seen", "windows", "waiters", "payloads", "spill", "spillrows")
USERS, PENDING, GROUPS, SEEN, WINDOWS, WAITERS, PAYLOADS, SPILL, SPILLROWS = TABLES
GLOBAL_TABLES = frozenset({GROUPS})

BY_USER = "by-user"
LEADER = "__assignor-__leader"  # Faust's LeaderAssignor: f"{app.conf.id}-__assignor-__leader"

DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024 + 64 * 1024
# max.message.bytes of every other topic cs-relay creates, set explicitly rather than
# left to the broker's default. What cs-relay writes stays well below it: a message is
# at most 32 KB (streams.core.segment), a pending index row at most 900 KB
# (streams.core.pendingrows), a hand-over of a visitor's profile at most
# HANDOVER_MAX_BYTES (streams.runtime.merge).
RECORD_LIMIT = 1024 * 1024
DLQ_MIN_BYTES = 128 * 1024  # the least a dead-letter topic found must take

# The programs that use Kafka, for `cs-relay acls`.
WORKER, INGEST, CLI = "worker", "ingest", "cli"


@dataclass(frozen=True)
class Topic:
    name: str
    role: str  # what it is, in a few words
    partitions: int
    # An existing topic must have exactly `partitions` (a user's rows are found by
    # partition number); else `partitions` is only what cs-relay creates it with.
    fixed: bool
    cleanup: str  # "delete" or "compact"
    max_message_bytes: int
    # The least max.message.bytes a topic found (created by someone else) must allow;
    # None: not checked (cs-relay only reads it).
    least_bytes: int | None
    readers: tuple[str, ...]
    writers: tuple[str, ...]

    @property
    def retention(self) -> str:
        """Compacted topics keep each key's latest record; the others keep records for
        the broker's log.retention.ms (cs-relay sets no retention.ms)."""
        return "latest per key" if self.cleanup == "compact" else "broker default"

    def configs(self) -> dict[str, str]:
        """The topic configs cs-relay creates it with."""
        return {"cleanup.policy": self.cleanup, "max.message.bytes": str(self.max_message_bytes)}

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "partitions": self.partitions,
            "partitions_fixed": self.fixed,
            "cleanup.policy": self.cleanup,
            "max.message.bytes": self.max_message_bytes,
            "retention": self.retention,
            "read_by": list(self.readers),
            "written_by": list(self.writers),
        }


def by_user_topic_name(app_id: str) -> str:
    """The internal topic intake re-keys every call to, by user (`{app_id}-by-user`)."""
    return f"{app_id}-{BY_USER}"


def changelog_name(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def backfill_topic_name(app_id: str) -> str:
    """Where `cs-relay backfill` records the input offsets it handled (streams.core.backfilled)."""
    return f"{app_id}-backfill"


def leader_topic_name(app_id: str) -> str:
    return f"{app_id}-{LEADER}"


def topic_list(settings: Settings) -> list[Topic]:
    """Every topic cs-relay reads or writes under these settings, in a stable order."""
    n, app_id = settings.topic_partitions, settings.app_id
    topics = [
        Topic(
            settings.input_topic,
            "input: Segment calls (CS_RELAY_INPUT_TOPIC)",
            n,
            settings.input_keyed_by_user,
            "delete",
            RECORD_LIMIT,
            None,
            readers=(WORKER, CLI),
            writers=(INGEST, CLI),
        ),
        Topic(
            by_user_topic_name(app_id),
            "calls and control records, keyed by user",
            n,
            True,
            "delete",
            RECORD_LIMIT,
            RECORD_LIMIT,
            readers=(WORKER,),
            writers=(WORKER,),
        ),
    ]
    for table in TABLES:
        kind = "global table" if table in GLOBAL_TABLES else "table"
        topics.append(
            Topic(
                changelog_name(app_id, table),
                f"changelog of the {table} {kind}",
                n,
                True,
                "compact",
                RECORD_LIMIT,
                RECORD_LIMIT,
                readers=(WORKER,),
                writers=(WORKER,),
            )
        )
    topics += [
        Topic(
            settings.dlq_topic,
            "dead letters (CS_RELAY_DLQ_TOPIC)",
            n,
            False,
            "delete",
            DLQ_MAX_MESSAGE_BYTES,
            DLQ_MIN_BYTES,
            readers=(CLI,),
            writers=(WORKER, CLI),
        ),
        Topic(
            backfill_topic_name(app_id),
            "what cs-relay backfill handled, per destination and input partition",
            1,
            False,
            "compact",
            RECORD_LIMIT,
            None,
            readers=(CLI,),
            writers=(CLI,),
        ),
        Topic(
            leader_topic_name(app_id),
            "Faust's assignor: which worker leads the group",
            1,
            False,
            "delete",
            RECORD_LIMIT,
            None,
            readers=(WORKER,),
            writers=(),
        ),
    ]
    return topics


def co_partitioned(settings: Settings) -> list[str]:
    """The topics whose partition count must be CS_RELAY_TOPIC_PARTITIONS: a user's
    records and their table rows are found by partition number."""
    return [t.name for t in topic_list(settings) if t.fixed and t.name != settings.input_topic]
