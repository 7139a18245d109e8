"""What a destination decides to do with one message: the plain data between the
pure mappings (`streams.destinations.clientsuccess.mapping`, `streams.destinations.customersuccessbox.mapping`)
and the shell that performs HTTP (`streams.runtime.delivery`).

A `PartnerRequest` carries no credentials: the delivery client adds them, so a
request can be logged, stored in state or put in a dead letter without leaking a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PartnerRequest:
    """An HTTP request to a partner, relative to its base URL, without credentials."""

    method: str
    path: str
    json: Mapping[str, Any]
    query: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "json": dict(self.json), "query": dict(self.query)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartnerRequest:
        return cls(data["method"], data["path"], data["json"], data.get("query") or {})


@dataclass(frozen=True)
class Send:
    """Deliver this request now."""

    request: PartnerRequest


@dataclass(frozen=True)
class Hold:
    """The message cannot be attributed yet; keep it until the state can attribute it."""

    reason: str


@dataclass(frozen=True)
class Skip:
    """Nothing to send: the partner does not take this call, or it only updates state."""

    reason: str


@dataclass(frozen=True)
class Reject:
    """The partner's rules refuse this message; it goes to the dead-letter topic."""

    reason: str
    detail: str


Decision = Send | Hold | Skip | Reject
