"""Everything configurable in cs-relay, read once from the environment.

`Settings.from_env()` is the only place that reads `os.environ` for the worker. Every
value is typed and validated at start-up (its form, and the checks across settings:
`streams.settingchecks`); a bad value raises `SettingsError` naming the variable, so a
misconfigured deployment stops with one clear line instead of failing later on the
first event.

Each destination's variables are read by its own settings class
(`streams/destinations/<key>/settings.py`), found through `streams.destinations.REGISTRY`.

Secrets (the destinations' keys, `CS_RELAY_WRITE_KEYS`, `CS_RELAY_ADMIN_TOKEN`,
`KAFKA_SASL_PASSWORD`) are held
in `Secret`, whose `repr` and `str` never show the value; errors about them never quote it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from streams import settingchecks as checks
from streams.core import spill
from streams.core.mappingfile import MappingError, load_file
from streams.core.mappings import Controls
from streams.core.pendingrows import MAX_EVENTS_BOUND
from streams.destinations import REGISTRY
from streams.destinations.base import DestinationSettings
from streams.envreader import EnvReader, Secret, SettingsError
from streams.kafkaconn import KafkaSecurity

T = TypeVar("T")


def _default_destinations() -> dict[str, DestinationSettings]:
    empty = EnvReader({})
    return {p.key: p.read_settings(empty) for p in REGISTRY}


@dataclass(frozen=True)
class Settings:
    """The worker's whole configuration. Field docs are the configuration reference."""

    kafka_bootstrap_servers: str = "localhost:9092"
    # TLS and SASL for every Kafka client: the worker, ingest, send, dlq, topic creation
    # (streams/kafkaconn.py; KAFKA_SECURITY_PROTOCOL and the KAFKA_SASL_* / KAFKA_SSL_* variables).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    input_topic: str = "segment-events"
    # The input topic is keyed by userId, else anonymousId, with Kafka's default
    # partitioner and has CS_RELAY_TOPIC_PARTITIONS partitions (as `cs-relay ingest` and
    # `cs-relay send` write it): the worker routes its records where they are, without
    # the re-keying hop through the by-user topic (streams.runtime.intake.intake).
    input_keyed_by_user: bool = False
    dlq_topic: str = "segment-events-dlq"
    app_id: str = "cs-relay"
    data_dir: Path = Path("var/worker")
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # The host name other workers use to reach this one's web server (inspection
    # forwarding); empty: `web_host`, or this machine's host name when that is a
    # wildcard such as 0.0.0.0 (a container's name in Docker Compose).
    web_advertised_host: str = ""
    # More names the web server answers to (CS_RELAY_WEB_ALLOWED_HOSTS, comma-separated);
    # besides these only localhost, loopback addresses, `web_host` and the advertised host
    # (streams/ops/hostcheck.py: against DNS rebinding).
    web_allowed_hosts: tuple[str, ...] = ()
    topic_partitions: int = 8
    # Copies of each topic cs-relay or Faust creates (input, dead letters, by-user, the
    # changelogs). 1 suits a single local broker; use 3 on a production cluster, where
    # the changelogs are the only durable copy of the state.
    topic_replication_factor: int = 1
    # Each registered destination's own settings (streams/destinations/<key>/settings.py).
    destinations: Mapping[str, DestinationSettings] = field(default_factory=_default_destinations)
    # The per-destination mapping controls of the TOML file named by CS_RELAY_MAPPINGS
    # (streams/core/mappings.py, docs/mappings.md); none: every destination as without it.
    # Each destination's own options are bound into its settings above.
    mappings: Controls = field(default_factory=Controls)
    http_timeout: float = 5.0
    max_in_flight: int = 64
    # The reading loops wait while the events read and not yet acknowledged hold this
    # many bytes of records (streams.runtime.intake.held_bytes), as well as at 5,000 events.
    max_unacked_bytes: int = 64 * 1024 * 1024
    quick_retries: int = 2
    retry_base_delay: float = 10.0
    retry_max_delay: float = 300.0
    retry_window_seconds: float = 4 * 3600.0
    # Isolation between destinations (streams/core/breaker.py): how long one delivery may
    # hold its event's acknowledgement before it is parked, the longest Retry-After slept
    # in-process and the longest honoured, and each destination's circuit breaker.
    delivery_deadline: float = 10.0
    max_inline_retry_after: float = 5.0
    max_retry_after: float = 3600.0
    breaker_failures: int = 5
    breaker_open_seconds: float = 5.0
    pending_max_events: int = 1000
    # Fairness (streams/core/spill.py): deliveries in memory per user and destination, and spilled
    user_share: int = 32
    spill_max_events: int = 20_000
    pending_max_age_seconds: float = 7 * 24 * 3600.0
    log_level: str = "info"
    # `cs-relay worker`'s event loop (streams/eventloop.py): uvloop, or asyncio's own.
    event_loop: str = "uvloop"
    shutdown_timeout: float = 20.0
    session_timeout: float = 30.0
    standby_replicas: int = 1
    commit_interval: float = 1.0
    dedupe_window_seconds: float = 24 * 3600.0
    sweep_interval_seconds: float = 3600.0
    dedupe_max_ids_per_user: int = 10_000
    # `cs-relay ingest`: the Segment write keys it accepts (none: it refuses to start)
    # and how long it waits for Kafka to acknowledge a request's messages.
    write_keys: tuple[Secret, ...] = ()
    ingest_timeout: float = 10.0
    # Requests per second and write key the ingest answers before 429 (0: no limit).
    ingest_rate_limit: float = 0.0
    # The worker's inspection, status and metrics endpoints (streams.ops.admin): a bearer
    # token they require when set, and the log line format (text or json).
    admin_token: Secret = Secret("")
    log_format: str = "text"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, errors: list[str] | None = None) -> Settings:
        """Read and validate every variable; raise `SettingsError` naming the bad one.
        Given an `errors` list (`cs-relay config`), every problem is appended to it
        instead, and the bad variables keep their defaults."""
        env = os.environ if env is None else env
        read = EnvReader(env, collect=errors is not None)
        d = cls()
        settings = cls._read(read, d)
        if errors is not None:
            errors.extend(read.errors)
        return settings

    @classmethod
    def from_reader(cls, read: EnvReader) -> Settings:
        """The settings read through `read`: one that records what it reads
        (`streams.settingsview`, `cs-relay config`), or collects every problem."""
        return cls._read(read, cls())

    @classmethod
    def _read(cls, read: EnvReader, d: Settings) -> Settings:
        settings = cls._read_each(read, d)
        problem = checks.first_problem(settings)
        if problem:
            return read.fail(problem, settings)
        return settings

    @classmethod
    def _read_each(cls, read: EnvReader, d: Settings) -> Settings:
        mappings = _mappings(read)
        return cls(
            kafka_bootstrap_servers=read.text(
                "KAFKA_BOOTSTRAP_SERVERS", d.kafka_bootstrap_servers, check=checks.bootstrap
            ),
            kafka_security=KafkaSecurity.from_env(read),
            input_topic=read.text("CS_RELAY_INPUT_TOPIC", d.input_topic, check=checks.topic_name),
            input_keyed_by_user=read.flag("CS_RELAY_INPUT_KEYED_BY_USER", d.input_keyed_by_user),
            dlq_topic=read.text("CS_RELAY_DLQ_TOPIC", d.dlq_topic, check=checks.topic_name),
            app_id=read.text("CS_RELAY_APP_ID", d.app_id, check=checks.topic_name),
            data_dir=Path(read.text("CS_RELAY_DATA_DIR", str(d.data_dir))),
            web_host=read.text("CS_RELAY_WEB_HOST", d.web_host),
            web_port=read.integer("CS_RELAY_WEB_PORT", d.web_port, low=0, high=65535),
            web_advertised_host=read.text(
                "CS_RELAY_WEB_ADVERTISED_HOST", d.web_advertised_host, check=checks.advertised_host
            ),
            web_allowed_hosts=_host_list(read.text("CS_RELAY_WEB_ALLOWED_HOSTS", "", check=checks.allowed_hosts)),
            topic_partitions=read.integer("CS_RELAY_TOPIC_PARTITIONS", d.topic_partitions, low=1, high=1024),
            topic_replication_factor=read.integer(
                "CS_RELAY_TOPIC_REPLICATION_FACTOR", d.topic_replication_factor, low=1, high=32
            ),
            destinations={p.key: _with_options(_destination_settings(p, read), mappings, p.key) for p in REGISTRY},
            mappings=mappings,
            http_timeout=read.number("CS_RELAY_HTTP_TIMEOUT", d.http_timeout, low=0.1, high=300),
            max_in_flight=read.integer("CS_RELAY_MAX_IN_FLIGHT", d.max_in_flight, low=1, high=10_000),
            max_unacked_bytes=read.integer(
                "CS_RELAY_MAX_UNACKED_BYTES", d.max_unacked_bytes, low=64 * 1024, high=16 * 1024**3
            ),
            quick_retries=read.integer("CS_RELAY_QUICK_RETRIES", d.quick_retries, low=0, high=20),
            retry_base_delay=read.number("CS_RELAY_RETRY_BASE_DELAY", d.retry_base_delay, low=0.01, high=3600),
            retry_max_delay=read.number("CS_RELAY_RETRY_MAX_DELAY", d.retry_max_delay, low=0.01, high=24 * 3600),
            retry_window_seconds=read.number(
                "CS_RELAY_RETRY_WINDOW_SECONDS", d.retry_window_seconds, low=1, high=30 * 24 * 3600
            ),
            delivery_deadline=read.number("CS_RELAY_DELIVERY_DEADLINE", d.delivery_deadline, low=0.1, high=3600),
            max_inline_retry_after=read.number(
                "CS_RELAY_MAX_INLINE_RETRY_AFTER", d.max_inline_retry_after, low=0, high=3600
            ),
            max_retry_after=read.number("CS_RELAY_MAX_RETRY_AFTER", d.max_retry_after, low=1, high=24 * 3600),
            breaker_failures=read.integer("CS_RELAY_BREAKER_FAILURES", d.breaker_failures, low=1, high=10_000),
            breaker_open_seconds=read.number(
                "CS_RELAY_BREAKER_OPEN_SECONDS", d.breaker_open_seconds, low=0.1, high=3600
            ),
            pending_max_events=read.integer(
                "CS_RELAY_PENDING_MAX_EVENTS", d.pending_max_events, low=1, high=MAX_EVENTS_BOUND
            ),
            user_share=read.integer("CS_RELAY_USER_SHARE", d.user_share, low=1, high=spill.MAX_SHARE),
            spill_max_events=read.integer(
                "CS_RELAY_SPILL_MAX_EVENTS", d.spill_max_events, low=0, high=spill.MAX_EVENTS_BOUND
            ),
            pending_max_age_seconds=read.number(
                "CS_RELAY_PENDING_MAX_AGE_SECONDS", d.pending_max_age_seconds, low=1, high=365 * 24 * 3600
            ),
            log_level=read.text("CS_RELAY_LOG_LEVEL", d.log_level, check=checks.log_level),
            event_loop=read.text("CS_RELAY_EVENT_LOOP", d.event_loop, check=checks.event_loop).lower(),
            shutdown_timeout=read.number("CS_RELAY_SHUTDOWN_TIMEOUT", d.shutdown_timeout, low=0, high=3600),
            session_timeout=read.number("CS_RELAY_SESSION_TIMEOUT", d.session_timeout, low=6, high=300),
            standby_replicas=read.integer("CS_RELAY_STANDBY_REPLICAS", d.standby_replicas, low=0, high=10),
            commit_interval=read.number("CS_RELAY_COMMIT_INTERVAL", d.commit_interval, low=0.1, high=60),
            sweep_interval_seconds=read.number(
                "CS_RELAY_SWEEP_INTERVAL_SECONDS", d.sweep_interval_seconds, low=1, high=7 * 24 * 3600
            ),
            dedupe_window_seconds=read.number(
                "CS_RELAY_DEDUPE_WINDOW_SECONDS", d.dedupe_window_seconds, low=0, high=30 * 24 * 3600
            ),
            dedupe_max_ids_per_user=read.integer(
                "CS_RELAY_DEDUPE_MAX_IDS_PER_USER", d.dedupe_max_ids_per_user, low=1, high=1_000_000
            ),
            write_keys=read.secrets("CS_RELAY_WRITE_KEYS"),
            ingest_timeout=read.number("CS_RELAY_INGEST_TIMEOUT", d.ingest_timeout, low=0.1, high=300),
            ingest_rate_limit=read.number("CS_RELAY_INGEST_RATE_LIMIT", d.ingest_rate_limit, low=0, high=1_000_000),
            admin_token=read.token("CS_RELAY_ADMIN_TOKEN"),
            log_format=read.text("CS_RELAY_LOG_FORMAT", d.log_format, check=checks.log_format).lower(),
        )

    @property
    def advertised_web_host(self) -> str:
        """What this worker tells the others to call it (Faust's canonical URL host)."""
        if self.web_advertised_host:
            return checks.url_host(self.web_advertised_host)
        if self.web_host in checks.WILDCARD_HOSTS:
            return socket.gethostname()
        return checks.url_host(self.web_host)

    def kafka_options(self) -> dict:
        """`bootstrap_servers` and the TLS / SASL options, for any aiokafka client."""
        return {"bootstrap_servers": self.kafka_bootstrap_servers, **self.kafka_security.client_options()}

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data for a start-up log line, secrets masked."""
        # _redact maps a dict of fields to a dict of the same keys
        return cast("dict[str, Any]", _redact(dataclasses.asdict(self)))

    def secrets(self) -> list[str]:
        """Every secret value in use, for log and dead-letter redaction."""
        values = [value for dest in self.destinations.values() for value in dest.secrets()]
        values += [key.reveal() for key in self.write_keys]
        values.append(self.admin_token.reveal())
        values.append(self.kafka_security.sasl_password.reveal())
        return [v for v in values if v]


def _destination_settings(plugin, read: EnvReader) -> DestinationSettings:
    """A destination's settings; in collect mode a problem its own parsing raises (not
    through `read`) is recorded and the destination keeps its defaults (disabled)."""
    try:
        return plugin.read_settings(read)
    except SettingsError as exc:
        return read.fail(str(exc), plugin.read_settings(EnvReader({})))


def _mappings(read: EnvReader) -> Controls:
    """The mapping file named by CS_RELAY_MAPPINGS, validated against every registered
    destination's options; each problem names the file, line and key."""
    path = read.text("CS_RELAY_MAPPINGS", "")
    if not path:
        return Controls()
    try:
        return load_file(path, {p.key: p.options for p in REGISTRY})
    except MappingError as exc:
        count = len(exc.problems)
        for number, problem in enumerate(exc.problems, 1):  # the worker stops at the first
            read.fail(
                f"CS_RELAY_MAPPINGS ({number} of {count}): {problem}" if count > 1 else f"CS_RELAY_MAPPINGS: {problem}",
                None,
            )
        return Controls()


def _with_options(settings: DestinationSettings, mappings: Controls, key: str) -> DestinationSettings:
    """A destination's settings with its own options from the mapping file bound in."""
    options = mappings.of(key).options
    return dataclasses.replace(settings, **options) if options else settings  # type: ignore[type-var]


def _redact(obj: object) -> object:
    if isinstance(obj, dict):
        if set(obj) == {"_value"}:
            return "***" if obj["_value"] else ""
        return {k: _redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _host_list(value: str) -> tuple[str, ...]:
    names = (name.strip().strip("[]").rstrip(".").lower() for name in value.split(","))
    return tuple(dict.fromkeys(name for name in names if name))
