"""The files the broker reads and its storage: `server.properties` (KRaft, one node that
is broker and controller, tuned to start fast and stay small), `log4j2.properties` (its
log to a file only), and the storage format (`kafka.tools.StorageTool`) a first start runs.
"""

from __future__ import annotations

import base64
import fcntl
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from streams.localkafka.errors import KafkaLaunchError


def server_settings(port: int, controller_port: int, log_dir: Path, listeners: Mapping[str, str]) -> dict[str, str]:
    """The broker's `server.properties`; `listeners` replaces the PLAINTEXT ones (TLS)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        **listeners,
        # one broker: every replication factor and ISR is 1
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # fast and small: no rebalance delay, few internal partitions, small files
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",  # lets tests use short consumer session timeouts
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "log.segment.bytes": str(16 * 1024 * 1024),
        "offsets.topic.segment.bytes": str(16 * 1024 * 1024),
        "transaction.state.log.segment.bytes": str(16 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "2",
        # After a restart the controller refuses the broker's new registration until
        # the old one's session expires (default 9 s): keep that short.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
    }


def log4j_settings(server_log: Path) -> dict[str, str]:
    """The broker's `log4j2.properties`: its log to `server_log`, rolled at 10 MB."""
    return {
        "status": "warn",
        "name": "cs-relay-local-kafka",
        "appender.file.type": "RollingFile",
        "appender.file.name": "FILE",
        "appender.file.fileName": str(server_log),
        "appender.file.filePattern": f"{server_log}.%i",
        "appender.file.layout.type": "PatternLayout",
        "appender.file.layout.pattern": "[%d] %p %m (%c)%n",
        "appender.file.policies.type": "Policies",
        "appender.file.policies.size.type": "SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size": "10MB",
        "appender.file.strategy.type": "DefaultRolloverStrategy",
        "appender.file.strategy.max": "3",
        "rootLogger.level": "INFO",
        "rootLogger.appenderRef.file.ref": "FILE",
        "logger.request.name": "kafka.request.logger",
        "logger.request.level": "WARN",
    }


def write_configs(data_dir: Path, settings: Mapping[str, str], server_log: Path) -> tuple[Path, Path]:
    """`server.properties` and `log4j2.properties` in `data_dir`, rewritten on every start."""
    props = data_dir / "server.properties"
    write_text(props, "# written by streams/localkafka on every start; edits are overwritten\n" + properties(settings))
    log4j = data_dir / "log4j2.properties"
    write_text(log4j, "# broker log to a file only; no console output\n" + properties(log4j_settings(server_log)))
    return props, log4j


def check_data_dir_free(data_dir: Path, log_dir: Path) -> None:
    """Refuse a data dir whose storage a running broker holds (its lock file, locked)."""
    lock = log_dir / ".lock"
    if not lock.exists():
        return
    with open(lock, "a") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the JVM locks it the same (POSIX) way
        except OSError:
            raise KafkaLaunchError(
                f"data dir {data_dir} is in use by another running Kafka broker: "
                "stop it or choose another with --data-dir"
            ) from None
        fcntl.lockf(handle, fcntl.LOCK_UN)


def format_storage(classpath: list[str], props: Path, data_dir: Path, log_dir: Path, extra: list[str]) -> None:
    """Format the storage in `log_dir` (a first start only); `extra`: more arguments (SCRAM users)."""
    cmd = [
        *classpath,
        "kafka.tools.StorageTool",
        "format",
        "--standalone",
        "-t",
        cluster_id(),
        "-c",
        str(props),
        *extra,
    ]
    try:
        proc = subprocess.run(
            cmd,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaLaunchError(
            f"formatting Kafka storage in {log_dir} took over 2 minutes: see {data_dir / 'server.log'}"
        ) from exc
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        raise KafkaLaunchError(
            f"formatting Kafka storage in {log_dir} failed (exit {proc.returncode}): "
            f"{' | '.join(lines[-3:]) or 'no output'}; "
            "remove that folder or choose another with --data-dir"
        )


def cluster_id() -> str:
    while True:  # 22 characters of base64url, as `kafka-storage random-uuid`; a leading '-' would read as an option
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def properties(settings: Mapping[str, str]) -> str:
    def escape(value: str) -> str:  # java.util.Properties reads ISO-8859-1 with \\ and \\uXXXX escapes
        value = value.replace("\\", "\\\\")
        return "".join(ch if 32 <= ord(ch) < 127 else f"\\u{ord(ch):04x}" for ch in value)

    return "".join(f"{key}={escape(value)}\n" for key, value in settings.items())


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    tmp.replace(path)
