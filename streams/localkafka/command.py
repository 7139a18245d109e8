"""`cs-relay kafka`: a local broker in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

from streams.localkafka.broker import LocalKafka
from streams.localkafka.errors import KafkaLaunchError


def _client_settings_text(kafka: LocalKafka) -> str:
    """The variables that connect cs-relay to a sasl_ssl broker, ready to paste into a shell."""
    env = kafka.client_env("SCRAM-SHA-512")
    lines = [
        "clients connect with SASL_SSL; this is a local development broker, so its password is shown here",
        f"(it is kept in {kafka.tls_dir / 'sasl-password'}; KAFKA_SASL_MECHANISM may also be PLAIN or SCRAM-SHA-256):",
        *(f"  export {name}={shlex.quote(value)}" for name, value in env.items()),
    ]
    return "\n".join(lines)


def run_kafka(port: int, data_dir: Path | None, security: str = "plaintext") -> int:
    """`cs-relay kafka`: start a broker, say where it is, run until SIGINT/SIGTERM, stop it cleanly."""
    default_dir = Path("var/kafka") if security == "plaintext" else Path(f"var/kafka-{security.replace('_', '-')}")
    kafka = LocalKafka(port=port, data_dir=Path(data_dir) if data_dir is not None else default_dir, security=security)

    def interrupt(signum, frame):  # SIGTERM while starting: unwind like Ctrl-C, so start() kills the JVM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        kafka.start(quiet=False)
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        print(
            f"Kafka {kafka.version} ready at {kafka.bootstrap_servers} "
            f"(started in {kafka.started_in:.1f}s, data in {kafka.data_dir})",
            flush=True,
        )
        if kafka.security == "sasl_ssl":
            print(_client_settings_text(kafka), flush=True)
        while not stop.wait(0.5):
            if not kafka.running:
                kafka.stop()  # reaps it
                print(
                    f"error: Kafka exited unexpectedly (code {kafka.returncode}): see {kafka.server_log}",
                    file=sys.stderr,
                )
                code = 1
                break
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)  # a second Ctrl-C while stopping interrupts the wait ...
        try:
            kafka.stop()
        except KeyboardInterrupt:
            kafka.kill()  # ... and kills the broker rather than leaving it behind
            raise
    if code == 0:
        print("Kafka stopped", flush=True)
    return code
