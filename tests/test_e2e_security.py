"""Kafka over SASL_SSL, end to end: one local broker with a TLS listener and SASL users
(`LocalKafka(security="sasl_ssl")`, as `cs-relay kafka --security sasl_ssl` starts it)
for the module; every client cs-relay has connects through it, with PLAIN and with
SCRAM-SHA-512: the worker (Faust's broker_credentials), the ingest's producer,
`cs-relay send` and `cs-relay dlq list` (aiokafka options). A wrong password and an
unknown certificate authority end `send` and `worker` with one line naming the setting."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from streams.envreader import Secret
from streams.localkafka import LocalKafka, generate_tls
from streams.ops.ingest import KafkaSink, create_app, serve
from tests.pipeline import REPO, Pipeline, open_pipeline

pytestmark = pytest.mark.e2e

WRITE_KEY = "e2e-security-write-key"


@pytest.fixture
async def secure_pipeline(secure_kafka, tmp_path, request):
    pipe = await open_pipeline(
        secure_kafka.bootstrap_servers, tmp_path, kafka_env=secure_kafka.client_security(request.param).env()
    )
    try:
        yield pipe
    finally:
        await pipe.close()


def cs_relay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


def webhook_message_ids(requests: list[dict]) -> set[str]:
    return {r["json"]["messageId"] for r in requests if isinstance(r.get("json"), dict) and "messageId" in r["json"]}


@pytest.mark.parametrize("secure_pipeline", ["PLAIN", "SCRAM-SHA-512"], indirect=True)
async def test_worker_ingest_send_and_dlq_all_go_through_sasl_ssl(secure_pipeline: Pipeline, tmp_path: Path):
    pipe = secure_pipeline
    assert pipe.kafka_security.protocol == "SASL_SSL"
    env = pipe.worker_env()
    tag = uuid.uuid4().hex[:8]
    worker = pipe.start_worker()

    # the test's own producer (the same options), then the worker delivers
    await pipe.send(
        {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": f"{tag}-own"}
    )

    # `cs-relay send`
    lines = tmp_path / "calls.jsonl"
    lines.write_text(json.dumps({"type": "track", "userId": "u1", "event": "Sent", "messageId": f"{tag}-send"}) + "\n")
    sent = cs_relay("send", str(lines), env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"sent 1 message from {lines}" in sent.stdout

    # the ingest's producer
    sink = KafkaSink(pipe.bootstrap, pipe.input_topic, timeout=20, security=pipe.kafka_security)
    runner, port = await serve(create_app((Secret(WRITE_KEY),), sink), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            call = {"userId": "u1", "event": "Ingested", "messageId": f"{tag}-ingest"}
            basic = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
            async with session.post(
                f"http://127.0.0.1:{port}/v1/track", json=call, headers={"Authorization": f"Basic {basic}"}
            ) as response:
                assert (response.status, await response.json()) == (200, {"success": True})
    finally:
        await runner.cleanup()
        await sink.stop()

    wanted = {f"{tag}-own", f"{tag}-send", f"{tag}-ingest"}
    await pipe.eventually(
        lambda: pipe.requests("webhook"),
        lambda r: wanted <= webhook_message_ids(r),
        timeout=90,
        what="the three calls at the webhook",
    )

    # a dead letter, read back by `cs-relay dlq list`
    await pipe.send(b"not json at all")
    await pipe.eventually(pipe.dead_letters, lambda d: len(d) == 1, timeout=60, what="the dead letter")
    listed = cs_relay("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["reason"] == "invalid_json" and letter["preview"].startswith("not json")
    assert worker.alive
    assert pipe.kafka_security.sasl_password.reveal() not in worker.log.read_text()


def refused(secure_kafka: LocalKafka, tmp_path: Path, **override: str) -> dict[str, str]:
    """A command's environment for the secured broker, with some settings overridden."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CS_RELAY_"))}
    env.update(
        secure_kafka.client_env("SCRAM-SHA-512"),
        CS_RELAY_DATA_DIR=str(tmp_path / "worker"),
        CS_RELAY_APP_ID=f"e2e-refused-{uuid.uuid4().hex[:6]}",
        **override,
    )
    return env


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


COMMANDS = [["send", str(REPO / "streams/samples/segment-sample.jsonl")], ["worker"]]


@pytest.mark.parametrize("command", COMMANDS, ids=["send", "worker"])
def test_a_wrong_password_is_one_line_naming_the_login_settings(secure_kafka, tmp_path, command):
    wrong = "not-the-password-" + uuid.uuid4().hex[:6]
    line = one_error_line(cs_relay(*command, env=refused(secure_kafka, tmp_path, KAFKA_SASL_PASSWORD=wrong)))
    print(line)
    assert line.startswith(
        "error: Kafka refused the SASL login (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD): "
        "SCRAM-SHA-512 as 'cs-relay': Authentication failed"
    )
    assert wrong not in line


@pytest.mark.parametrize("command", COMMANDS, ids=["send", "worker"])
def test_an_unknown_certificate_authority_is_one_line_naming_the_ca_file(secure_kafka, tmp_path, command):
    generate_tls(tmp_path / "other-ca", server=False)  # a CA that did not sign the broker's certificate
    env = refused(secure_kafka, tmp_path, KAFKA_SSL_CAFILE=str(tmp_path / "other-ca" / "ca.pem"))
    line = one_error_line(cs_relay(*command, env=env))
    print(line)
    assert line.startswith("error: TLS: the broker's certificate is not trusted (KAFKA_SSL_CAFILE): ")


def test_a_plaintext_client_does_not_get_through(secure_kafka, tmp_path):
    env = refused(secure_kafka, tmp_path)
    for name in [k for k in env if k.startswith(("KAFKA_SASL_", "KAFKA_SSL_"))]:
        del env[name]
    env["KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    line = one_error_line(cs_relay("send", str(REPO / "streams/samples/segment-sample.jsonl"), env=env))
    assert line.startswith(f"error: cannot reach Kafka at {secure_kafka.bootstrap_servers}")
    # not only "no broker answered": the listener was asked which protocol it speaks
    assert line.endswith("not PLAINTEXT: set KAFKA_SECURITY_PROTOCOL=SASL_SSL"), line
