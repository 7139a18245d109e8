"""`cs-relay topics`: the one list of topics, the one the worker creates, the one the
docs show. Faust's own app names no topic outside it, and a worker started on a real
broker makes exactly the topics it lists; `--create` creates and checks them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools import topicdoc
from streams.cli.topics import render
from streams.runtime.topiclist import TABLES, WORKER, leader_topic_name, topic_list
from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def cs_relay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def clean_env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CS_RELAY_"))}
    env.update(more)
    return env


def test_the_command_prints_the_list_for_the_current_settings():
    env = clean_env(CS_RELAY_APP_ID="acme", CS_RELAY_TOPIC_PARTITIONS="12", CS_RELAY_INPUT_KEYED_BY_USER="true")
    shown = cs_relay("topics", env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == render(Settings.from_env(env)) + "\n"
    lines = shown.stdout.splitlines()
    assert (
        lines[0]
        == "14 topics for CS_RELAY_APP_ID=acme (CS_RELAY_TOPIC_PARTITIONS=12, CS_RELAY_TOPIC_REPLICATION_FACTOR=1):"
    )
    row = {line.split()[0]: line.split() for line in lines[3:17]}
    # keyed by user: the input topic must have the by-user count, no longer "any"
    assert row["segment-events"][1:5] == ["12", "delete", "1048576", "broker"]
    assert row["acme-pending-changelog"][1:5] == ["12", "compact", "1048576", "latest"]
    assert row["segment-events-dlq"][1:5] == ["12", "(any)", "delete", "4259840"]
    assert row["acme-__assignor-__leader"][1:3] == ["1", "(any)"]
    assert row["acme-backfill"][1:4] == ["1", "(any)", "compact"]
    assert {f"acme-{table}-changelog" for table in TABLES} < set(row)

    listed = json.loads(cs_relay("topics", "--json", env=env).stdout)
    assert [t["name"] for t in listed["topics"]] == list(row)
    by_name = {t["name"]: t for t in listed["topics"]}
    assert by_name["acme-by-user"] == {
        "name": "acme-by-user",
        "role": "calls and control records, keyed by user",
        "partitions": 12,
        "partitions_fixed": True,
        "cleanup.policy": "delete",
        "max.message.bytes": 1048576,
        "retention": "broker default",
        "read_by": ["worker"],
        "written_by": ["worker"],
    }


def test_the_docs_show_what_the_command_prints():
    """docs/operations.md and docs/configuration.md hold `cs-relay topics`'s output for
    the default settings: a change to the list without `python -m devtools.topicdoc` fails here."""
    for path in topicdoc.DOCUMENTS:
        document = path.read_text()
        assert topicdoc.rewritten(document) == document, f"{path} is out of date: run python -m devtools.topicdoc"
        assert render(Settings.from_env({})) in document
    broken = topicdoc.DOCUMENTS[0].read_text().replace("cs-relay-waiters-changelog ", "cs-relay-waiter-changelog  ")
    assert topicdoc.rewritten(broken) != broken


PROBE = """
import json
from streams.runtime import app
a = app.app
names = {t.changelog_topic.get_topic_name() for t in a.tables.values()}
names |= {topic for agent in a.agents.values() for topic in agent.channel.topics}
names |= {a._leader_assignor._leader_topic_name, app.dlq_topic.get_topic_name()}
print(json.dumps(sorted(names)))
"""


def test_every_topic_the_faust_app_names_is_in_the_list(tmp_path):
    env = clean_env(CS_RELAY_DATA_DIR=str(tmp_path), CS_RELAY_APP_ID="probe", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    named = json.loads(done.stdout.strip().splitlines()[-1])
    by_worker = [t.name for t in topic_list(Settings.from_env(env)) if WORKER in (*t.readers, *t.writers)]
    assert sorted(named) == sorted(by_worker)


async def broker_topics(bootstrap: str, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {name for name in await admin.list_topics() if name.startswith(prefix)}
    finally:
        await admin.close()


@pytest.mark.e2e
async def test_a_started_worker_made_exactly_the_topics_listed(pipeline):
    worker = pipeline.start_worker()
    await pipeline.send({"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "m1"})
    await pipeline.eventually(
        lambda: pipeline.requests("webhook"), lambda r: len(r) == 1, timeout=90, what="the identify at the webhook"
    )
    leader = leader_topic_name(pipeline.name)
    listed = {
        t.name for t in topic_list(Settings.from_env(pipeline.worker_env())) if WORKER in (*t.readers, *t.writers)
    }
    made = await pipeline.eventually(
        lambda: broker_topics(pipeline.bootstrap, pipeline.name), lambda t: leader in t, what="Faust's topics"
    )
    assert worker.alive
    # every topic the worker (and Faust in it) made is in the list, and nothing is missing
    assert made == listed


@pytest.mark.e2e
async def test_create_makes_the_missing_topics_and_checks_the_others(kafka_bootstrap):
    name = f"topics-cli-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        CS_RELAY_APP_ID=name,
        CS_RELAY_INPUT_TOPIC=f"{name}-in",
        CS_RELAY_DLQ_TOPIC=f"{name}-dlq",
        CS_RELAY_TOPIC_PARTITIONS="2",
    )
    names = [t.name for t in topic_list(Settings.from_env(env))]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{name}-in", 5, 1)])  # the deployment's: any count
    finally:
        await admin.close()
    first = cs_relay("topics", "--create", env=env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[:-1] == [f"{'exists' if n == f'{name}-in' else 'created':<8} {n}" for n in names]
    assert lines[-1] == f"14 topics ready at {kafka_bootstrap}: 13 created, 1 found"
    assert await broker_topics(kafka_bootstrap, name) == set(names)
    again = cs_relay("topics", "--create", "--json", env=env)
    assert json.loads(again.stdout) == dict.fromkeys(names, "exists")

    # a changelog count that disagrees: one line naming it, exit 2, as the worker says it
    wrong = cs_relay("topics", "--create", env={**env, "CS_RELAY_TOPIC_PARTITIONS": "3"})
    assert wrong.returncode == 2
    assert wrong.stderr.startswith(f"error: topic '{name}-by-user' has 2 partitions but CS_RELAY_TOPIC_PARTITIONS is 3")
