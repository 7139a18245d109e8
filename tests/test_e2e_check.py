"""`cs-relay check` end to end: the shared PLAINTEXT broker with the mocks, a private
SASL_SSL broker (`LocalKafka(security="sasl_ssl")`), and a client speaking the wrong
protocol to each. One line per check, exit 0 only when all passed."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from streams.localkafka import LocalKafka
from streams.ops.webserve import free_port
from streams.runtime.topiclist import topic_list
from streams.settings import Settings
from tests.pipeline import REPO, Pipeline

TOPICS = len(topic_list(Settings()))  # every topic cs-relay reads or writes

pytestmark = pytest.mark.e2e


def cs_relay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """{check name: its line}; every stdout line is one check."""
    out = {}
    for line in result.stdout.splitlines():
        assert line.startswith(("ok    ", "FAIL  ")), line
        out[line[6:].split(":", 1)[0]] = line
    return out


def secure_env(kafka: LocalKafka, **override: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CS_RELAY_", "CLIENTSUCCESS_", "CSB_"))}
    env.pop("WEBHOOK_URL", None)
    name = f"check-{uuid.uuid4().hex[:6]}"
    env.update(kafka.client_env("SCRAM-SHA-512"), CS_RELAY_APP_ID=name, CS_RELAY_INPUT_TOPIC=f"{name}-in")
    env.update(CS_RELAY_DLQ_TOPIC=f"{name}-dlq", **override)
    return env


async def test_plaintext_with_the_mocks_passes_once_the_topics_exist(pipeline: Pipeline):
    env = pipeline.worker_env()
    before = cs_relay("check", env=env)
    assert before.returncode == 1, before.stdout + before.stderr
    checks = lines(before)
    assert checks["settings"] == "ok    settings: every variable valid"
    assert checks["kafka"] == f"ok    kafka: reached {pipeline.bootstrap} as PLAINTEXT"
    assert checks["topics"].startswith(
        f"FAIL  topics: {TOPICS - 1} of {TOPICS} missing, or hidden from this login without Describe ("
    )
    assert checks["topics"].endswith("): `cs-relay topics --create`, `cs-relay acls`")

    assert cs_relay("topics", "--create", env=env).returncode == 0
    after = cs_relay("check", env=env)
    assert after.returncode == 0, after.stdout + after.stderr
    checks = lines(after)
    assert checks["topics"] == f"ok    topics: all {TOPICS} found with the partitions and configs cs-relay needs"
    for key in ("clientsuccess", "customersuccessbox", "webhook"):
        assert checks[key].startswith(f"ok    {key}: http://127.0.0.1:"), checks[key]
        assert "reached (plain HTTP); " in checks[key] and "not sent" in checks[key]
    assert checks["clientsuccess"].startswith(f"ok    clientsuccess: {pipeline.mocks.urls['clientsuccess']} reached")
    assert after.stderr == "ready to go live\n"
    # the mocks saw no request: nothing was sent that could record an event
    for key in ("clientsuccess", "customersuccessbox", "webhook"):
        assert await pipeline.requests(key) == []

    # a destination that does not answer, and a changelog the worker could not use
    closed = cs_relay("check", env={**env, "WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook"})
    assert closed.returncode == 1
    webhook = lines(closed)["webhook"]
    assert webhook.startswith("FAIL  webhook: http://127.0.0.1:") and "cannot connect to 127.0.0.1:" in webhook
    other = cs_relay("check", env={**env, "CS_RELAY_TOPIC_PARTITIONS": str(pipeline.partitions + 1)})
    assert other.returncode == 1
    assert f"'{pipeline.name}-by-user' has {pipeline.partitions} partitions" in lines(other)["topics"]


def test_sasl_ssl_is_reached_with_the_configured_login(secure_kafka: LocalKafka):
    env = secure_env(secure_kafka)
    assert cs_relay("topics", "--create", env=env).returncode == 0
    result = cs_relay("check", env=env)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result)
    assert checks["kafka"] == (
        f"ok    kafka: reached {secure_kafka.bootstrap_servers} as SASL_SSL (SCRAM-SHA-512, user 'cs-relay')"
    )
    assert checks["topics"].startswith(f"ok    topics: all {TOPICS} found")
    assert checks["webhook"] == "ok    webhook: off (set WEBHOOK_URL to enable it)"

    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    refused = cs_relay("check", env={**env, "KAFKA_SASL_PASSWORD": wrong})
    assert refused.returncode == 1
    assert lines(refused)["kafka"].startswith(
        "FAIL  kafka: Kafka refused the SASL login (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD)"
    )
    assert wrong not in refused.stdout + refused.stderr


def test_a_wrong_protocol_is_named(secure_kafka: LocalKafka, kafka_bootstrap):
    plaintext = {k: v for k, v in secure_env(secure_kafka).items() if not k.startswith(("KAFKA_SASL_", "KAFKA_SSL_"))}
    plaintext["KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    result = cs_relay("check", env=plaintext)
    print(result.stdout)
    assert result.returncode == 1
    server = secure_kafka.bootstrap_servers
    assert lines(result)["kafka"] == (
        f"FAIL  kafka: cannot reach Kafka at {server} (KAFKA_BOOTSTRAP_SERVERS): the listener at {server} speaks "
        f"SASL_SSL (SASL mechanisms PLAIN, SCRAM-SHA-512, SCRAM-SHA-256), not PLAINTEXT: "
        "set KAFKA_SECURITY_PROTOCOL=SASL_SSL"
    )
    assert "topics" not in lines(result)  # nothing more to ask a broker not reached

    # the reverse: a SASL_SSL client at the shared PLAINTEXT listener
    secured = secure_env(secure_kafka, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    reverse = lines(cs_relay("check", env=secured))["kafka"]
    assert reverse.startswith(f"FAIL  kafka: cannot reach Kafka at {kafka_bootstrap} (KAFKA_BOOTSTRAP_SERVERS): ")
    assert reverse.endswith("speaks PLAINTEXT, not SASL_SSL: set KAFKA_SECURITY_PROTOCOL=PLAINTEXT")
