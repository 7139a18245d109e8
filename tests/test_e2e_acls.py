"""`cs-relay acls` against a broker that enforces them: a local SASL_SSL broker with
Kafka's StandardAuthorizer and one login per program (worker, ingest, cli). The ACLs
`cs-relay acls` prints are applied as they are, and nothing else: the worker creates its
topics, joins its group and delivers; the ingest's principal writes the input topic;
the command line sends, lists the dead letters and checks. A principal is refused what
its ACLs do not give it."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from streams.kafkaconn import KafkaSecurity
from streams.localkafka import SASL_USER, KafkaLaunchError, LocalKafka
from streams.runtime.topiclist import topic_list
from streams.settings import Settings
from tests.pipeline import REPO, open_pipeline

pytestmark = pytest.mark.e2e

PROGRAMS = ("worker", "ingest", "cli")
# Kafka's protocol codes (org.apache.kafka.common.acl / resource)
RESOURCE = {"topic": 2, "group": 3}
OPERATION = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
LITERAL, ALLOW = 3, 3


class AuthorizingKafka(LocalKafka):
    """LocalKafka(security="sasl_ssl") that enforces ACLs, with a PLAIN login per program
    (same password as `SASL_USER`). The broker's own PLAINTEXT loopback listeners (its
    controller and inter-broker traffic, and this test's administrator) are ANONYMOUS,
    the one super user."""

    def _sasl_ssl_settings(self) -> dict[str, str]:
        settings = super()._sasl_ssl_settings()
        key = "listener.name.sasl_ssl.plain.sasl.jaas.config"
        users = " ".join(f'user_{name}="{self._sasl_password()}"' for name in PROGRAMS)
        settings[key] = settings[key].rstrip(";") + f" {users};"
        settings["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        settings["super.users"] = "User:ANONYMOUS"
        return settings

    def login(self, program: str) -> KafkaSecurity:
        return dataclasses.replace(self.client_security("PLAIN"), sasl_username=program)

    def env(self, program: str) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers, **self.login(program).env()}


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    broker = AuthorizingKafka(port=0, data_dir=tmp_path_factory.mktemp("kafka-acls"), security="sasl_ssl")
    try:
        broker.start(timeout=40)
    except KafkaLaunchError as exc:
        pytest.fail(f"cannot start the broker: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def cs_relay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def acl_lines(env: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(principal, resource type, name, operation) of each `kafka-acls.sh` line printed."""
    principals = [arg for program in PROGRAMS for arg in (f"--{program}-principal", f"User:{program}")]
    printed = cs_relay("acls", *principals, env=env)
    assert printed.returncode == 0, printed.stderr
    out = []
    for line in printed.stdout.splitlines():
        if line and not line.startswith("#"):
            words = shlex.split(line)
            assert words[0] == "kafka-acls.sh" and "--add" in words
            principal = words[words.index("--allow-principal") + 1]
            for i, word in enumerate(words):
                if word == "--operation":
                    out.append((principal, words[-2].removeprefix("--"), words[-1], words[i + 1]))
    return out


async def apply(kafka: AuthorizingKafka, acls: list[tuple[str, str, str, str]]) -> None:
    """Create the ACLs as the super user, on the broker's own PLAINTEXT listener."""
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kafka.internal_port}")
    await admin.start()
    try:
        for principal, resource, name, operation in acls:
            request = CreateAclsRequest(RESOURCE[resource], name, LITERAL, principal, "*", OPERATION[operation], ALLOW)
            response = await admin._send_request(request)
            assert [error for error, _ in response.creation_responses] == [0], response
    finally:
        await admin.close()


async def test_each_program_works_with_the_acls_printed_and_nothing_more(kafka, tmp_path):
    name = f"acls-{uuid.uuid4().hex[:6]}"
    kafka_env = {k: v for k, v in kafka.env("worker").items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    pipe = await open_pipeline(kafka.bootstrap_servers, tmp_path, name=name, kafka_env=kafka_env)
    try:
        worker_env = pipe.worker_env()
        await apply(kafka, acl_lines(worker_env))

        def as_program(program: str) -> dict[str, str]:
            base = {k: v for k, v in worker_env.items() if not k.startswith("KAFKA_")}
            return {**base, **kafka.env(program)}

        # the worker creates its topics (Create), joins its group and works
        worker = pipe.start_worker()
        # the command line writes the input topic
        calls = tmp_path / "calls.jsonl"
        call = {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": f"{name}-1"}
        calls.write_text(json.dumps(call) + "\n")
        sent = cs_relay("send", str(calls), env=as_program("cli"))
        assert sent.returncode == 0, sent.stderr
        await pipe.eventually(
            lambda: pipe.requests("webhook"), lambda r: len(r) == 1, timeout=90, what="the identify at the webhook"
        )
        # the ingest's principal writes the input topic; the worker dead-letters the bytes
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, **kafka.login("ingest").client_options())
        await producer.start()
        try:
            await producer.send_and_wait(pipe.input_topic, b"not json at all", key=b"u1")
        finally:
            await producer.stop()

        # the command line reads the dead letters (no consumer group) and checks everything
        async def dead_letters() -> list[dict]:
            listed = cs_relay("dlq", "list", "--json", env=as_program("cli"))
            assert listed.returncode == 0, listed.stderr
            return [json.loads(line) for line in listed.stdout.splitlines()]

        [letter] = await pipe.eventually(dead_letters, lambda d: len(d) == 1, timeout=60, what="the dead letter")
        assert letter["reason"] == "invalid_json"
        checked = cs_relay("check", env=as_program("cli"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert worker.alive, worker.log_tail()

        # refused what the ACLs do not give: the ingest reads no dead letters, the
        # command line joins no group (it needs none), the worker writes no input
        refused = cs_relay("dlq", "list", "--json", env=as_program("ingest"))
        assert refused.returncode == 2 and "TopicAuthorizationFailed" in refused.stderr, refused.stderr
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, **kafka.login("worker").client_options())
        await producer.start()
        try:
            with pytest.raises(Exception, match="TopicAuthorizationFailed"):
                await producer.send_and_wait(pipe.input_topic, b"{}", key=b"u1")
        finally:
            await producer.stop()
        # a login that may see the topics but not their configs: `check` says which ACL is missing
        assert f"User:{SASL_USER}" not in {p for p, *_ in acl_lines(worker_env)}
        names = {n for _, kind, n, _ in acl_lines(worker_env) if kind == "topic"}
        await apply(kafka, [(f"User:{SASL_USER}", "topic", n, "Describe") for n in names])
        described = cs_relay("check", env={**as_program("cli"), **kafka.client_env("SCRAM-SHA-512")})
        assert described.returncode == 1
        [topics] = [line for line in described.stdout.splitlines() if line.startswith("FAIL  topics: ")]
        assert "(TopicAuthorizationFailedError): this login needs DescribeConfigs on them" in topics, topics
        hidden = cs_relay("check", env=as_program("ingest"))
        every = len(topic_list(Settings()))  # the ingest service may see two of them: input and dead letters
        hidden_line = f"FAIL  topics: {every - 2} of {every} missing, or hidden from this login without Describe"
        assert hidden_line in hidden.stdout, hidden.stdout
    finally:
        await pipe.close()
