"""A real single-node Apache Kafka broker for development and tests, without Docker.

`cs-relay kafka`, `cs-relay dev` and the test suite's session fixture run Apache Kafka
4.x in KRaft "combined" mode (one JVM is both broker and controller, no ZooKeeper):

1. `resolve_kafka()` (`jars.py`) fetches the broker's jars from Maven Central once per
   Kafka version, with `mvn dependency:copy-dependencies` on `pom.xml` (installed with
   this package, as package data), into `<cache>/<version>/libs` (cache:
   `$CS_RELAY_KAFKA_CACHE` or `~/.cache/cs-relay/kafka`). The jars land in a temporary folder that is renamed into
   place only after Maven succeeded, so an interrupted download is never used. The
   folder carries a marker with a digest of the pom: editing the pom fetches again.
2. `LocalKafka.start()` (`broker.py`) writes `server.properties` and `log4j2.properties`
   (`config.py`) into its data dir, formats the storage (`kafka.tools.StorageTool format --standalone`) the
   first time only -- a restart on the same data dir keeps topics and records -- runs
   `java ... kafka.Kafka server.properties` in its own process group, and returns once
   the broker answers a metadata request (not merely once the port is open).

Files in the data dir: `logs/` (Kafka's data), `server.log` (the broker's own log),
`kafka.out` (the JVM's stdout and stderr), and the two generated config files; with
`security="sasl_ssl"` (`cs-relay kafka --security sasl_ssl`) also `tls/` (`tls.py`): a
certificate authority (`ca.pem`, what clients trust), the broker's certificate for 127.0.0.1 and
localhost with its key (`broker-keystore.pem`, a PEM keystore Kafka 4 reads directly) and
the SASL user's password (`sasl-password`). That broker's clients listen on SASL_SSL
(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; the SCRAM credentials are written when the storage
is formatted, `--add-scram`); the controller and the broker's own traffic stay on
PLAINTEXT loopback listeners.

Environment: `CS_RELAY_KAFKA_VERSION` (default 4.0.2), `CS_RELAY_KAFKA_CACHE`,
`CS_RELAY_KAFKA_POM`, `JAVA_HOME` (else `java` on PATH; Java 17 or newer).

The broker is tuned to start fast and stay small (1 partition per auto-created topic,
4 partitions for the internal offsets/transaction topics, 16 MB segments, short broker
session so a restart re-registers in ~3 s instead of ~10 s). It listens on 127.0.0.1
only and is meant for development and tests, never for production data.
"""

from streams.localkafka.broker import SECURITY_MODES, LocalKafka
from streams.localkafka.command import run_kafka
from streams.localkafka.errors import KafkaLaunchError
from streams.localkafka.jars import DEFAULT_KAFKA_VERSION, kafka_cache_dir, kafka_pom, resolve_kafka
from streams.localkafka.ready import wait_until_ready
from streams.localkafka.tls import SASL_MECHANISMS, SASL_USER, generate_tls

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "SASL_MECHANISMS",
    "SASL_USER",
    "SECURITY_MODES",
    "KafkaLaunchError",
    "LocalKafka",
    "generate_tls",
    "kafka_cache_dir",
    "kafka_pom",
    "resolve_kafka",
    "run_kafka",
    "wait_until_ready",
]
