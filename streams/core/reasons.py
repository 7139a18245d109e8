"""Every dead-letter reason, as one enum.

The values are the `cs-relay-reason` header of a dead letter: stable codes that
operators filter on (`cs-relay dlq replay --reason R`) and dashboards count, so a value
never changes once released. `Reason` is a `StrEnum`: a member is the string itself
(`Reason.PARTNER_REFUSED == "partner_refused"`, and it formats as its value).

By stage:

* intake (`streams.core.segment.parse` refuses the record): `INTAKE`;
* routing: a bug while routing (`ROUTING_ERROR`), a held event dropped from a full
  queue or held too long (`PENDING_OVERFLOW`, `PENDING_EXPIRED`), a destination's
  rules refusing the message (`streams.core.decision.Reject.reason`, one of
  `DESTINATION_REJECTS`);
* delivery: the partner refused it for good (`PARTNER_REFUSED`), or its retries ran out
  (`RETRIES_EXHAUSTED`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator


class Reason(enum.StrEnum):
    # intake: the record is not a valid Segment message
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    OVERSIZED = "oversized"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_TIMESTAMP = "invalid_timestamp"
    MESSAGE_ID_TOO_LONG = "message_id_too_long"
    TOO_DEEP = "too_deep"
    ID_TOO_LONG = "id_too_long"  # streams.core.idlimits.MAX_ID_BYTES
    NAME_TOO_LONG = "name_too_long"  # streams.core.idlimits.MAX_NAME_BYTES
    # routing
    ROUTING_ERROR = "routing_error"
    PENDING_OVERFLOW = "pending_overflow"
    PENDING_EXPIRED = "pending_expired"
    GROUP_WITHOUT_NAME = "group_without_name"  # ClientSuccess: a group call needs traits.name
    # delivery
    PARTNER_REFUSED = "partner_refused"
    RETRIES_EXHAUSTED = "retries_exhausted"


class Reasons:
    """A named subset of `Reason`, iterable and read by attribute like an enum
    (`INTAKE.TOO_DEEP is Reason.TOO_DEEP`), for code that speaks of one stage only."""

    def __init__(self, *members: Reason) -> None:
        self._members = members

    def __iter__(self) -> Iterator[Reason]:
        return iter(self._members)

    def __contains__(self, value: object) -> bool:
        return value in self._members

    def __instancecheck__(self, value: object) -> bool:
        return value in self._members  # isinstance(reason, INTAKE): one of this stage's

    def __len__(self) -> int:
        return len(self._members)

    def __getattr__(self, name: str) -> Reason:
        if name.startswith("_"):
            raise AttributeError(name)
        for member in self._members:
            if member.name == name:
                return member
        raise AttributeError(name)


INTAKE = Reasons(
    Reason.NOT_UTF8,
    Reason.INVALID_JSON,
    Reason.NOT_AN_OBJECT,
    Reason.OVERSIZED,
    Reason.UNKNOWN_TYPE,
    Reason.MISSING_FIELD,
    Reason.WRONG_TYPE,
    Reason.INVALID_TIMESTAMP,
    Reason.MESSAGE_ID_TOO_LONG,
    Reason.TOO_DEEP,
    Reason.ID_TOO_LONG,
    Reason.NAME_TOO_LONG,
)
DESTINATION_REJECTS = Reasons(Reason.GROUP_WITHOUT_NAME)
