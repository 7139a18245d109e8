"""What intake yields: a valid Segment `Message`, or an `InvalidMessage` naming why not.

`Message` is the record every later stage reads (the step, the destinations' mappings,
the preview); `streams.core.segment` makes one from a Kafka record or a decoded object.
Here too: how a Segment id reads as text (`id_text`), and the `integrations` switches
of a call (`destination_enabled`). Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.core.reasons import Reason  # intake's reasons: streams.core.reasons.INTAKE

__all__ = ["InvalidMessage", "Message", "context_group_id", "destination_enabled", "id_text"]


class InvalidMessage(Exception):
    """A message that breaks the rules. `detail` never holds the whole payload."""

    reason: Reason
    detail: str
    field: str | None

    def __init__(self, reason: Reason, detail: str, field: str | None = None) -> None:
        super().__init__(reason, detail, field)
        self.reason = Reason(reason)
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Message:
    """A valid Segment message. Ids are normalised to strings; `raw` is the decoded
    object as received (plus a derived `messageId` when it had none). Its `timestamp`
    is read once, by intake (`streams.core.timestamps.read_timestamp`): `moment` is
    that time, `utc_timestamp` the text every partner receives (UTC, with a `Z`)."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: str | None
    context: Mapping[str, Any]
    integrations: Mapping[str, Any]
    raw: Mapping[str, Any]
    moment: datetime | None
    utc_timestamp: str | None
    # `context.groupId` as text: the group/account the call was made for, if given
    # (`context_group_id`; read by the step and each destination).
    context_group_id: str | None

    @property
    def key(self) -> str:
        """The id the message is keyed by: userId, else anonymousId (never empty)."""
        return self.user_id or self.anonymous_id or ""

    @property
    def traits(self) -> Mapping[str, Any]:
        return self.raw.get("traits") or {}

    @property
    def properties(self) -> Mapping[str, Any]:
        return self.raw.get("properties") or {}

    def _string(self, field: str) -> str | None:
        value = self.raw.get(field)
        return value if isinstance(value, str) else None

    @property
    def event(self) -> str | None:
        """The track call's event name."""
        return self._string("event")

    @property
    def name(self) -> str | None:
        """The page or screen name."""
        return self._string("name")

    @property
    def category(self) -> str | None:
        return self._string("category")

    @property
    def group_id(self) -> str | None:
        """The group call's groupId, as a string."""
        return _loose_id(self.raw.get("groupId"))

    @property
    def previous_id(self) -> str | None:
        """The alias call's previousId, as a string."""
        return _loose_id(self.raw.get("previousId"))


def context_group_id(context: Mapping[str, Any]) -> str | None:
    """`context.groupId` as text (`Message.context_group_id`), None when absent or empty."""
    return _loose_id(context.get("groupId"))


def destination_enabled(integrations: Mapping[str, Any] | None, name: str) -> bool:
    """Segment's `integrations` switches: the destination's own entry when present (an
    object of options counts as enabled, false disables), else `All` (default true)."""
    if not integrations:
        return True
    if name in integrations:
        return _switch(integrations[name])
    return _switch(integrations.get("All", True))


def _switch(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    return bool(value)


def id_text(value: Any) -> str | None:
    """A string or number id as text (None for null/other types). Integral floats lose
    their `.0`, as JavaScript prints them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return None


def _loose_id(value: Any) -> str | None:
    return id_text(value) or None
