"""`cs-relay acls`: the Kafka ACLs each program of cs-relay needs, as commands.

Three programs use Kafka, each with its own principal: the worker (`cs-relay worker`),
the ingest service (`cs-relay ingest`) and the command line (`send`, `dlq list` /
`dlq replay`, `topics`, `check`). What each reads and writes comes from the topic list
(`streams.runtime.topiclist.topic_list`, the one the worker creates), so the ACLs cannot
drift from the topics:

* the worker reads its topics and writes its own, in the consumer group
  `CS_RELAY_APP_ID`; at start-up it lists and describes them (`DescribeConfigs`: their
  record limits) and creates the missing ones (`Create`; with `--precreated`, when an
  administrator creates them beforehand, neither the worker nor the CLI needs it);
* the ingest service writes the input topic;
* the command line writes the input topic (`send`, `dlq replay`), reads the dead letters
  without a consumer group (`dlq list`), and describes every topic (`check`, `topics
  --create`, which also creates them).

No program produces idempotently or in transactions (Faust's default at-least-once
processing; aiokafka's producers are not idempotent by default): no `IdempotentWrite` on
the cluster, no transactional-id ACL. `Read` and `Write` imply `Describe`.

`grants(settings, principals, precreated)` is the plain data; `render` writes it as
`kafka-acls.sh` commands (Apache Kafka, Amazon MSK), `confluent kafka acl create`
commands (Confluent Cloud) or `avn service acl-add` commands (Aiven's ACLs, whose
permissions are per topic: read, write, readwrite, admin).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.runtime.topiclist import CLI, INGEST, WORKER, topic_list
from streams.settings import Settings

PROGRAMS = (WORKER, INGEST, CLI)
DEFAULT_PRINCIPALS = {WORKER: "User:cs-relay-worker", INGEST: "User:cs-relay-ingest", CLI: "User:cs-relay-cli"}
WHAT = {
    WORKER: "cs-relay worker",
    INGEST: "cs-relay ingest",
    CLI: "the command line: send, dlq list / replay, topics, check",
}
FORMS = ("kafka-acls", "confluent", "aiven")


@dataclass(frozen=True)
class Grant:
    program: str
    resource: str  # "topic" or "group"
    name: str
    operations: tuple[str, ...]  # Kafka's names: Read, Write, Create, DescribeConfigs, Describe


def grants(settings: Settings, *, precreated: bool = False) -> list[Grant]:
    """Every ACL, per program, in the order of the topic list."""
    out = [Grant(WORKER, "group", settings.app_id, ("Read",))]
    for program in PROGRAMS:
        for topic in topic_list(settings):
            ops = []
            if program in topic.readers:
                ops.append("Read")
            if program in topic.writers:
                ops.append("Write")
            if program == CLI and not ops:
                ops.append("Describe")
            if program == CLI or (program == WORKER and ops):  # the worker creates and checks its own
                ops += [*(() if precreated else ("Create",)), "DescribeConfigs"]
            if ops:
                out.append(Grant(program, "topic", topic.name, tuple(ops)))
    return out


def render(
    settings: Settings, principals: dict[str, str], *, form: str = "kafka-acls", precreated: bool = False
) -> str:
    lines: list[str] = []
    by_program = grants(settings, precreated=precreated)
    for program in PROGRAMS:
        mine = [g for g in by_program if g.program == program]
        if lines:
            lines.append("")
        lines.append(f"# {WHAT[program]} as {principals[program]}")
        lines += [_line(g, principals[program], settings, form) for g in mine]
    if not precreated:
        lines += [
            "",
            "# Create: the worker creates missing topics at start-up, `cs-relay topics --create` too;",
            "# with --precreated (an administrator ran `cs-relay topics --create`) neither needs it.",
        ]
    return "\n".join(lines)


def _line(grant: Grant, principal: str, settings: Settings, form: str) -> str:
    if form == "confluent":
        ops = ",".join(_kebab(op) for op in grant.operations)
        where = f"--topic {grant.name}" if grant.resource == "topic" else f"--consumer-group {grant.name}"
        return f"confluent kafka acl create --allow --principal {principal} --operations {ops} {where}"
    if form == "aiven":
        return _aiven(grant, principal)
    ops = " ".join(f"--operation {op}" for op in grant.operations)
    return (
        f"kafka-acls.sh --bootstrap-server {settings.kafka_bootstrap_servers} --command-config admin.properties "
        f"--add --allow-principal {principal} {ops} --{grant.resource} {grant.name}"
    )


def _aiven(grant: Grant, principal: str) -> str:
    user = principal.removeprefix("User:")
    if grant.resource == "group":
        return f"# consumer group {grant.name}: open to every user on Aiven"
    ops = set(grant.operations)
    if "Create" in ops:  # Aiven: only admin may create topics
        permission = "admin"
    elif {"Read", "Write"} <= ops:
        permission = "readwrite"
    elif "Write" in ops:
        permission = "write"
    else:
        permission = "read"
    return f"avn service acl-add <service> --username {user} --permission {permission} --topic {grant.name}"


def _kebab(operation: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(operation))


def add_parser(sub) -> None:  # sub: argparse's subparsers action
    parser = sub.add_parser("acls", help="the Kafka ACLs of the worker, the ingest service and the command line")
    parser.add_argument("--form", choices=FORMS, default="kafka-acls", help="the commands' form (default kafka-acls)")
    parser.add_argument(
        "--precreated",
        action="store_true",
        help="the topics are created beforehand (`cs-relay topics --create`): the worker needs no Create",
    )
    for program in PROGRAMS:
        parser.add_argument(
            f"--{program}-principal",
            default=DEFAULT_PRINCIPALS[program],
            metavar="User:NAME",
            help=f"the principal of {WHAT[program]} (default {DEFAULT_PRINCIPALS[program]})",
        )
    parser.set_defaults(run=_run)


def _run(args) -> int:
    principals = {program: getattr(args, f"{program}_principal") for program in PROGRAMS}
    print(render(Settings.from_env(), principals, form=args.form, precreated=args.precreated))
    return 0
