"""The local Kafka broker (streams/localkafka/) with a real JVM and real clients: no mocks.

The jars come from the shared cache (`~/.cache/cs-relay/kafka` or `$CS_RELAY_KAFKA_CACHE`),
so Maven runs once per machine; every broker here gets its own data dir and free ports.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.localkafka import KafkaLaunchError, LocalKafka, resolve_kafka, run_kafka, wait_until_ready


async def produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume(
    bootstrap: str, topic: str, count: int, *, group: str | None = None, timeout: float = 30.0
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend((r.key, r.value) for r in batch)
        if group is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    return records


async def topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def cluster_id(kafka: LocalKafka) -> str:
    for line in (kafka.log_dir / "meta.properties").read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1]
    raise AssertionError("no cluster.id in meta.properties")


SHUTDOWN_LINE = "Transition from SHUTTING_DOWN to SHUTDOWN"  # Kafka's clean shutdown, in server.log


@pytest.mark.e2e
async def test_start_produce_consume_restart_crash_and_stop_on_the_same_data_dir(tmp_path):
    """One broker's life on one data dir (three JVM starts, the slow part: one test, not
    two): it starts, carries records, refuses a second broker, restarts cleanly keeping
    its topics and records, survives a crash, and stops cleanly on SIGTERM."""
    data = tmp_path / "kafka"
    topic = f"kept-{uuid.uuid4().hex[:8]}"
    kafka = LocalKafka(port=0, data_dir=data)
    await asyncio.to_thread(kafka.start)
    try:
        assert kafka.running and kafka.port > 0
        assert kafka.bootstrap_servers == f"127.0.0.1:{kafka.port}"
        assert 0 < kafka.started_in < 60
        first_id, port = cluster_id(kafka), kafka.port
        await produce(kafka.bootstrap_servers, topic, b"k", b"before restart")

        with pytest.raises(KafkaLaunchError, match="is in use by another running Kafka broker"):
            LocalKafka(port=0, data_dir=data).start()

        await asyncio.to_thread(kafka.restart)  # clean stop, start again: same port, not formatted again
        assert kafka.server_log.read_text().count(SHUTDOWN_LINE) == 1
        assert kafka.port == port and cluster_id(kafka) == first_id
        assert topic in await topics(kafka.bootstrap_servers)
        assert await consume(kafka.bootstrap_servers, topic, 1) == [(b"k", b"before restart")]

        kafka.kill()  # a crash: no controlled shutdown
        assert not kafka.running and kafka.returncode == -9
    finally:
        kafka.stop()

    again = LocalKafka(port=0, data_dir=data)  # a new process on the same data dir
    again.start()  # called from a running event loop on purpose: start() copes
    try:
        assert cluster_id(again) == first_id
        await produce(again.bootstrap_servers, topic, b"k", b"after crash")
        # With a consumer group, last: its offsets topic (50 partitions) would slow each restart.
        expected = [(b"k", b"before restart"), (b"k", b"after crash")]
        assert await consume(again.bootstrap_servers, topic, 2, group="g-test") == expected
    finally:
        await asyncio.to_thread(again.stop)
    assert not again.running
    assert again.returncode == 143  # SIGTERM handled: Kafka's clean shutdown, not a kill
    assert again.server_log.read_text().count(SHUTDOWN_LINE) == 2


def test_port_in_use_gives_a_clear_error(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = f"port {port} is already in use: stop what listens there or choose another with --port"
        with pytest.raises(KafkaLaunchError, match=expected):
            LocalKafka(port=port, data_dir=tmp_path / "kafka").start()
        assert run_kafka(port, tmp_path / "kafka") == 2
    assert capsys.readouterr().err.strip() == f"error: {expected}"
    assert not (tmp_path / "kafka").exists()  # nothing written, nothing formatted


def test_missing_maven_gives_a_clear_error(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # a PATH with java but without mvn
    bin_dir.mkdir()
    if shutil.which("java"):
        (bin_dir / "java").symlink_to(shutil.which("java"))
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("CS_RELAY_KAFKA_CACHE", str(cache))
    expected = (
        r"needs `mvn` \(Apache Maven\) on PATH to fetch Kafka from Maven Central; "
        r"install it or set KAFKA_BOOTSTRAP_SERVERS"
    )
    with pytest.raises(KafkaLaunchError, match=expected):
        resolve_kafka()
    with pytest.raises(KafkaLaunchError, match=expected):
        LocalKafka(port=0, data_dir=tmp_path / "kafka").start()
    assert not cache.exists() or not any(cache.iterdir())


def test_failed_maven_reports_mavens_reason_and_leaves_no_jars(tmp_path, monkeypatch):
    monkeypatch.setenv("CS_RELAY_KAFKA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(
        KafkaLaunchError, match=r"^mvn could not fetch Kafka 0\.0\.1-no-such-version from Maven Central \(exit 1\): "
    ) as info:
        resolve_kafka("0.0.1-no-such-version")
    assert "\n" not in str(info.value)
    assert "[Help 1]" not in str(info.value)
    assert not (tmp_path / "cache" / "0.0.1-no-such-version" / "libs").exists()


def test_a_jvm_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    kafka = LocalKafka(port=0, data_dir=tmp_path / "kafka", heap="1k")  # the JVM refuses such a heap
    with pytest.raises(KafkaLaunchError, match=r"^Kafka exited with code 1 while starting: .*heap") as info:
        kafka.start()
    assert "Too small" in str(info.value)
    assert not kafka.running


async def test_wait_until_ready_gives_up_with_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        began = time.monotonic()
        with pytest.raises(
            KafkaLaunchError, match=rf"Kafka at 127.0.0.1:{port} did not answer a metadata request within 1s"
        ):
            await wait_until_ready(f"127.0.0.1:{port}", 1)
        assert time.monotonic() - began < 5
