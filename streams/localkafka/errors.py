"""What the local broker says when it cannot be fetched, started or reached."""

from __future__ import annotations

HINT_EXISTING = "set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"


class KafkaLaunchError(Exception):
    """The local broker could not be fetched, started or reached; the message says what to do."""
