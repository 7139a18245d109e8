"""`cs-relay acls`: the ACLs follow the topic list (streams.runtime.topiclist), for any
settings: each program gets what it reads and writes there, and nothing on the cluster."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from streams.runtime.topiclist import TABLES, topic_list
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent
ENV = {
    "CS_RELAY_APP_ID": "acme",
    "CS_RELAY_INPUT_TOPIC": "acme-calls",
    "CS_RELAY_DLQ_TOPIC": "acme-dead",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092",
}


def acls(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CS_RELAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "acls", *args],
        env={**env, **ENV},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def parsed(stdout: str) -> dict[tuple[str, str, str], set[str]]:
    """{(principal, resource type, name): operations} from kafka-acls.sh lines."""
    out: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for line in stdout.splitlines():
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        assert words[:6] == [
            "kafka-acls.sh",
            "--bootstrap-server",
            "kafka-1:9092",
            "--command-config",
            "admin.properties",
            "--add",
        ]
        principal = words[words.index("--allow-principal") + 1]
        ops = {words[i + 1] for i, w in enumerate(words) if w == "--operation"}
        resource, name = words[-2].removeprefix("--"), words[-1]
        assert resource in {"topic", "group"}, line  # no --cluster, no --transactional-id
        out[(principal, resource, name)] |= ops
    return out


def test_each_program_gets_what_the_topic_list_says_it_reads_and_writes():
    done = acls("--worker-principal", "User:w", "--ingest-principal", "User:i", "--cli-principal", "User:c")
    assert done.returncode == 0, done.stderr
    grants = parsed(done.stdout)
    changelogs = [f"acme-{table}-changelog" for table in TABLES]
    names = [t.name for t in topic_list(Settings.from_env(ENV))]
    assert names == [
        "acme-calls",
        "acme-by-user",
        *changelogs,
        "acme-dead",
        "acme-backfill",
        "acme-__assignor-__leader",
    ]
    admin = {"Create", "DescribeConfigs"}
    worker = {name: ops for (who, kind, name), ops in grants.items() if who == "User:w" and kind == "topic"}
    assert worker == {
        "acme-calls": {"Read"} | admin,
        "acme-by-user": {"Read", "Write"} | admin,
        **{name: {"Read", "Write"} | admin for name in changelogs},
        "acme-dead": {"Write"} | admin,
        "acme-__assignor-__leader": {"Read"} | admin,
    }
    assert grants[("User:w", "group", "acme")] == {"Read"}
    assert {key: ops for key, ops in grants.items() if key[0] == "User:i"} == {
        ("User:i", "topic", "acme-calls"): {"Write"}
    }
    cli = {name: ops for (who, _, name), ops in grants.items() if who == "User:c"}
    # backfill reads the input and writes dead letters and its own record
    assert cli["acme-calls"] == {"Read", "Write"} | admin and cli["acme-dead"] == {"Read", "Write"} | admin
    assert cli["acme-backfill"] == {"Read", "Write"} | admin
    assert set(cli) == set(names) and all(
        cli[n] == {"Describe"} | admin for n in names if n not in {"acme-calls", "acme-dead", "acme-backfill"}
    )

    # topics created beforehand by an administrator: nobody needs Create
    precreated = parsed(acls("--precreated").stdout)
    assert all("Create" not in ops for ops in precreated.values())
    assert precreated[("User:cs-relay-worker", "topic", "acme-by-user")] == {"Read", "Write", "DescribeConfigs"}


def test_the_managed_forms_carry_the_same_grants():
    confluent = acls("--form", "confluent").stdout.splitlines()
    kafka = parsed(acls().stdout)
    lines = [line for line in confluent if line and not line.startswith("#")]
    assert len(lines) == len(kafka)
    assert (
        "confluent kafka acl create --allow --principal User:cs-relay-worker --operations read --consumer-group acme"
        in lines
    )
    assert (
        "confluent kafka acl create --allow --principal User:cs-relay-worker "
        "--operations read,write,create,describe-configs --topic acme-by-user"
    ) in lines
    aiven = acls("--form", "aiven", "--precreated").stdout.splitlines()
    assert "avn service acl-add <service> --username cs-relay-ingest --permission write --topic acme-calls" in aiven
    assert (
        "avn service acl-add <service> --username cs-relay-worker --permission readwrite --topic acme-users-changelog"
        in aiven
    )
    assert "avn service acl-add <service> --username cs-relay-worker --permission read --topic acme-calls" in aiven
