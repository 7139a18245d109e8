"""What cs-relay would do with Segment messages, without doing it (`cs-relay preview`,
the worker's `POST /preview/{userId}`, the console's "Try a message").

The messages go through the same pure `streams.core.step.step` the worker runs, against
a user's state (a running worker's tables, or none), in order: each sees the state the
ones before it left, kept here in memory. Nothing is sent and nothing is written.

Each message gets one `Outcome` per enabled destination (and one per held event it
would release): sent (the request), counted in an aggregation window, held, skipped or
refused (dead-lettered), each with its reason. A message that does not parse is refused
before any destination (`Preview.invalid`), as intake would dead-letter it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from streams.core.decision import PartnerRequest
from streams.core.destination import Destination
from streams.core.memory import Memory
from streams.core.message import InvalidMessage, Message
from streams.core.outcome import Step
from streams.core.pending import Pending
from streams.core.segment import parse
from streams.core.state import GroupState, UserState
from streams.core.step import step

SEND, AGGREGATE, HOLD, SKIP, REFUSE, RELEASE = "send", "aggregate", "hold", "skip", "refuse", "release"
NOT_DELIVERED = frozenset({HOLD, REFUSE})


class StateSource(Protocol):
    """Where a preview reads a user's state: a worker's tables, or nothing (`EMPTY`)."""

    def user(self, key: str) -> UserState | None: ...

    def pending(self, key: str) -> Pending: ...

    def group(self, group_id: str) -> GroupState | None: ...


class _Empty:
    def user(self, key: str) -> UserState | None:
        return None

    def pending(self, key: str) -> Pending:
        return Pending()

    def group(self, group_id: str) -> GroupState | None:
        return None


EMPTY: StateSource = _Empty()


@dataclass(frozen=True)
class Outcome:
    destination: str
    verdict: str  # SEND, AGGREGATE, HOLD, SKIP, REFUSE or RELEASE (a held event sent now)
    reason: str = ""
    request: PartnerRequest | None = None
    message_id: str | None = None  # RELEASE: the held event's messageId

    def to_dict(self, render: Callable[[str, PartnerRequest], Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": self.destination, "verdict": self.verdict}
        if self.reason:
            out["reason"] = self.reason
        if self.request is not None:
            out["request"] = dict(render(self.destination, self.request))
        if self.message_id is not None:
            out["messageId"] = self.message_id
        return out


@dataclass(frozen=True)
class Preview:
    """One message's outcomes, in the order of the input."""

    index: int
    key: str | None
    message_id: str | None
    call: str
    outcomes: tuple[Outcome, ...] = ()
    invalid: str | None = None  # why intake would dead-letter it

    @property
    def delivered(self) -> bool:
        """Neither held nor refused by any destination: sent (or counted in a window)
        wherever it is meant to go; a skip is a destination's rule, not a failure."""
        own = [o for o in self.outcomes if o.verdict != RELEASE]
        return self.invalid is None and not any(o.verdict in NOT_DELIVERED for o in own)

    def to_dict(self, render: Callable[[str, PartnerRequest], Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "call": self.call, "delivered": self.delivered}
        if self.key is not None:
            out["user"] = self.key
        if self.message_id is not None:
            out["messageId"] = self.message_id
        if self.invalid is not None:
            out["invalid"] = self.invalid
        out["outcomes"] = [o.to_dict(render) for o in self.outcomes]
        return out


@dataclass
class Scratch:
    """The state the previewed messages leave, over the source's: never written back."""

    source: StateSource
    users: dict[str, UserState] = field(default_factory=dict)
    pendings: dict[str, Pending] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)

    def user(self, key: str) -> UserState | None:
        return self.users[key] if key in self.users else self.source.user(key)

    def pending(self, key: str) -> Pending:
        return self.pendings[key] if key in self.pendings else self.source.pending(key)

    def group(self, group_id: str) -> GroupState | None:
        return self.groups[group_id] if group_id in self.groups else self.source.group(group_id)


def preview(
    raws: Sequence[bytes],
    destinations: Sequence[Destination],
    source: StateSource = EMPTY,
    *,
    now: float,
    max_pending: int,
    max_pending_age: float,
    memories: Sequence[Memory] = (),
    blocked: Callable[[str], frozenset[str]] = lambda key: frozenset(),
) -> list[Preview]:
    """Each raw message's outcomes, in order, as the worker would decide them now.
    `blocked(key)`: the destinations with a delivery of that user being parked."""
    scratch = Scratch(source)
    now_iso = datetime.fromtimestamp(now, UTC).isoformat()
    out = []
    for index, raw in enumerate(raws):
        try:
            msg = parse(raw)
        except InvalidMessage as exc:
            out.append(
                Preview(index, None, None, "(not a valid Segment call)", invalid=f"{exc.reason.value}: {exc.detail}")
            )
            continue
        key, text = msg.key, raw.decode("utf-8")
        result = step(
            key,
            msg,
            text,
            {"preview": True},
            scratch.user(key),
            scratch.pending(key),
            scratch.group,
            destinations,
            now=now,
            now_iso=now_iso,
            max_pending=max_pending,
            max_pending_age=max_pending_age,
            blocked=blocked(key),
            memories=memories,
        )
        scratch.users[key] = result.user
        scratch.pendings[key] = result.pending
        if result.group is not None:
            scratch.groups[result.group.group_id] = result.group
        out.append(Preview(index, key, msg.message_id, describe_call(msg), outcomes(result, msg, text, destinations)))
    return out


def outcomes(result: Step, msg: Message, raw: str, destinations: Sequence[Destination]) -> tuple[Outcome, ...]:
    """Per destination, what `step` decided for `msg` (`raw`, its text); then the held
    events it releases, or drops (held too long, or one too many)."""
    mine: dict[str, Outcome] = {}
    released: list[Outcome] = []
    held_now = {key for key, _ in result.held}
    for dispatch in result.dispatches:
        if dispatch.message_id == msg.message_id and dispatch.released_seq is None:
            mine[dispatch.destination] = Outcome(dispatch.destination, SEND, request=dispatch.request)
        elif dispatch.message_id == msg.message_id and dispatch.destination in held_now:
            # held behind the user's earlier events, which it released: all go now, in order
            held_now.discard(dispatch.destination)
            mine[dispatch.destination] = Outcome(
                dispatch.destination, SEND, "after the user's earlier held events", dispatch.request
            )
        else:
            released.append(
                Outcome(
                    dispatch.destination,
                    RELEASE,
                    "held before, sent now that it can be attributed",
                    dispatch.request,
                    dispatch.message_id,
                )
            )
    for fold in result.folds:
        mine[fold.destination] = Outcome(
            fold.destination,
            AGGREGATE,
            f"its {fold.field!r} is summed in an aggregation window, sent when the window closes",
            fold.request,
        )
    for key, reason in result.skipped:
        mine[key] = Outcome(key, SKIP, reason)
    for key in result.denied:
        needs = next((sorted(d.consent) for d in destinations if d.key == key), [])
        mine[key] = Outcome(key, SKIP, f"consent: the call does not grant {', '.join(needs)} (context.consent)")
    for key, reason in result.held:
        if key in held_now:
            mine[key] = Outcome(key, HOLD, reason)
    for dead in result.dead_letters:
        if dead.destination is None:
            continue
        verdict = Outcome(dead.destination, REFUSE, f"{_reason(dead.reason)}: {dead.detail}")
        if dead.raw == raw and dead.destination not in mine:
            mine[dead.destination] = verdict
        else:  # an earlier held event, dropped
            released.append(Outcome(dead.destination, REFUSE, verdict.reason, message_id=_message_id(dead.raw)))
    ordered = [mine.get(d.key) or Outcome(d.key, SKIP, "nothing to send") for d in destinations]
    return (*ordered, *released)


def _message_id(raw: str | bytes) -> str | None:
    try:
        return parse(raw).message_id
    except InvalidMessage:
        return None


def describe_call(msg: Message) -> str:
    if msg.type == "track":
        return f"track {msg.event!r}"
    if msg.type in ("page", "screen"):
        return f"{msg.type} {msg.name!r}" if msg.name else msg.type
    if msg.type == "group":
        return f"group {msg.group_id!r}"
    if msg.type == "alias":
        return f"alias {msg.raw.get('previousId')!r}"
    return msg.type


def _reason(reason: Any) -> str:
    return str(getattr(reason, "value", reason))
