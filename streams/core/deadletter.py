"""Dead letters: a message cs-relay cannot process, kept with its original bytes.

A dead letter's value is the original record value, untouched. Its headers say why:
`cs-relay-reason` (a stable machine-readable code), `cs-relay-detail` (one readable
sentence), `cs-relay-stage` (intake, routing or delivery), where it came from
(`cs-relay-source-topic`, `-partition`, `-offset`), and for delivery failures the
destination and the partner's status. Header values are redacted of secrets.

A dead letter of a user's event also has `cs-relay-dead-letter-id`: a digest of the
user and what the event is to them (its destination and number), the same when a redo
after a crash writes the dead letter again. A replay names it, so that replaying both
copies delivers once (issue 22, finding 6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.core.redact import redact

PREFIX = "cs-relay-"
DETAIL_MAX = 500

# A dead letter sent back to the input topic (`cs-relay dlq replay`, the console:
# streams.ops.dlq.replay_headers) carries these; the runtime routes it by them
# (streams.runtime.handlers): past dedupe, to the one destination that refused it,
# remembered by the dead letter's identity.
REPLAY_HEADER = "cs-relay-replay"
REPLAY_DESTINATION_HEADER = "cs-relay-replay-destination"
REPLAY_OF_HEADER = "cs-relay-replay-of"


def dead_letter_headers(
    *,
    reason: str,
    detail: str,
    stage: str,
    source: Mapping[str, Any],
    destination: str | None = None,
    status: int | None = None,
    secrets: Iterable[str] = (),
    now: datetime | None = None,
    ident: str | None = None,
) -> dict[str, bytes]:
    """The headers of a dead-letter record, as Kafka header bytes; `ident`: its
    identity (`identity_of`), when it has one."""
    fields: dict[str, Any] = {
        "reason": reason,
        "detail": redact(detail, secrets)[:DETAIL_MAX],
        "stage": stage,
        "source-topic": source.get("topic"),
        "source-partition": source.get("partition"),
        "source-offset": source.get("offset"),
        "destination": destination,
        "status": status,
        "failed-at": (now or datetime.now(UTC)).isoformat(),
        "dead-letter-id": ident,
    }
    return {PREFIX + k: str(v).encode("utf-8") for k, v in fields.items() if v is not None}


def identity_of(key: bytes, what: str) -> str:
    """A dead letter's identity: `what` it is for the user `key` (destination and the
    event's number there), digested: short, the same under redo, no id in clear."""
    return hashlib.sha256(key + b"\x00" + what.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class DeadLetterRecord:
    """A dead letter read back from the topic, for `cs-relay dlq list` and replay."""

    offset: int
    partition: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]
    topic: str = ""  # the dead-letter topic it was read from ("": not read from Kafka)

    @property
    def identity(self) -> str | None:
        """Where it is in the dead-letter topic, `topic/partition/offset`: what a replay
        carries so that replaying it twice delivers it once. None when unknown."""
        if not self.topic or self.partition < 0 or self.offset < 0:
            return None
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def replay_identity(self) -> str | None:
        """What a replay names it by: its own identity (`identity_of`), which the copies
        a redo wrote share, else where it is."""
        own = self.headers.get("dead-letter-id")
        return f"id/{own}" if own else self.identity

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "")

    def preview(self, width: int = 80) -> str:
        text = self.value[: width * 4].decode("utf-8", errors="replace")
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"


def read_headers(raw: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Our headers from a Kafka record's header list, without the prefix."""
    return {
        k[len(PREFIX) :]: v.decode("utf-8", errors="replace") for k, v in raw if k.startswith(PREFIX) and v is not None
    }
