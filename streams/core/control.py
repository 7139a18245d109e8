"""Control records: records on the by-user topic that carry no Segment call but an
instruction for the partition that owns a key (a table row can only be written there).

One frozen dataclass per kind; `encode` and `decode` are the only code that knows the
wire format. That format is what earlier versions wrote and must stay readable while a
by-user topic still holds their records during an upgrade: the kind in the
`cs-relay-kind` header (the `KIND` bytes of each class), the fields as a JSON object
(`json.dumps` with its default separators), keyed by the user whose state the record
changes, or with an empty key sent to one partition (`Sweep`, `RetryDue`).
tests/test_core_control.py holds frozen examples of each kind as version 0.1 wrote them.

    kind           sent by                      what the owner of the key does
    pending-done   a finished delivery          removes the released event from `releasing`
    merge-request  route (identify/alias)       hands the anonymous profile to the user
    merge-profile  the anonymous partition      folds the profile into the user
    merge-done     the user's partition         forgets the copy of the handed profile
    group-update   route (a group call)         applies the call to the group (its one writer)
    group-wait     route (an event held)        notes the user waiting for the group
    group-known    the group's partition        releases what the group now attributes
    sweep          a timer, to each partition   prunes dedupe rows, expires held events
    park           a failed delivery            stores it in the user's parked queue
    retry-due      a timer, to a partition      retries the due parked heads once
    retried        a retry                      applies its outcome
    window-close   a timer, to a partition      sends the closed windows of these users
    window-done    a closed window's delivery   removes the window from the user's row
    caught-up      a worker, on assignment       its reading of the partition has caught up
    spill-done     a spilled delivery, sent      drops it from the user's spill queue (streams.core.spill)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from streams.core.pending import Parked
from streams.core.retry import Outcome
from streams.core.spill import SpillDone

KIND_HEADER = "cs-relay-kind"


@dataclass(frozen=True)
class PendingDone:
    """Released event `seq` of `destination` was delivered (or dead-lettered): forget it."""

    KIND: ClassVar[bytes] = b"pending-done"
    destination: str
    seq: int

    def body(self) -> dict[str, Any]:
        return {"destination": self.destination, "seq": self.seq}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PendingDone:
        return cls(body["destination"], body["seq"])


@dataclass(frozen=True)
class MergeRequest:
    """To an anonymous profile: hand yourself to user `into`."""

    KIND: ClassVar[bytes] = b"merge-request"
    into: str
    # (destination, seq) of the visitor's waiting events already in the dead-letter
    # topic: they did not fit in one hand-over (streams.runtime.merge)
    cut: tuple[tuple[str, int], ...] = ()

    def body(self) -> dict[str, Any]:
        return {"into": self.into, **({"cut": [list(slot) for slot in self.cut]} if self.cut else {})}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MergeRequest:
        return cls(body["into"], tuple((str(d), int(s)) for d, s in body.get("cut") or ()))


@dataclass(frozen=True)
class MergeProfile:
    """To a user: the anonymous profile `anonymous_id` to fold in. `user` and `pending`
    are table records as they were stored (`UserState.to_dict()`, `Pending.to_dict()`),
    each with its own version: the receiver reads them with the table readers, so a
    record an older worker put in transit reads as the table would read it."""

    KIND: ClassVar[bytes] = b"merge-profile"
    anonymous_id: str
    user: Mapping[str, Any] | None
    pending: Mapping[str, Any] | None

    def body(self) -> dict[str, Any]:
        return {"anonymous_id": self.anonymous_id, "user": self.user, "pending": self.pending}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MergeProfile:
        return cls(body["anonymous_id"], body.get("user") or None, body.get("pending"))


@dataclass(frozen=True)
class MergeDone:
    """To an anonymous profile: user `into` has folded in the profile handed to it
    (durably): forget the copy kept in case the hand-over had to be sent again."""

    KIND: ClassVar[bytes] = b"merge-done"
    into: str

    def body(self) -> dict[str, Any]:
        return {"into": self.into}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MergeDone:
        return cls(body["into"])


@dataclass(frozen=True)
class GroupUpdate:
    """To a group (keyed by groupId): apply group call `call` (its JSON text), routed at
    `at` (ISO 8601), to the group's record. Only the group's own partition writes it, so
    every record of a group is in one changelog partition, in one order."""

    KIND: ClassVar[bytes] = b"group-update"
    call: str
    at: str

    def body(self) -> dict[str, Any]:
        return {"call": self.call, "at": self.at}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GroupUpdate:
        return cls(body["call"], body["at"])


@dataclass(frozen=True)
class GroupWait:
    """To a group (keyed by groupId): `user` holds events until the group is known (or
    gains what they need); `seen` is the `updated_at` of the record the user saw."""

    KIND: ClassVar[bytes] = b"group-wait"
    user: str
    seen: str | None

    def body(self) -> dict[str, Any]:
        return {"user": self.user, "seen": self.seen}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GroupWait:
        return cls(body["user"], body.get("seen"))


@dataclass(frozen=True)
class GroupKnown:
    """To a user waiting for a group: the group's record (`GroupState.to_dict()`) as its
    partition has it now."""

    KIND: ClassVar[bytes] = b"group-known"
    group: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        return {"group": dict(self.group)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GroupKnown:
        return cls(body["group"])


@dataclass(frozen=True)
class Sweep:
    """To one partition (empty key): prune expired dedupe rows, expire held events and
    parked deliveries past the retry window. One record sweeps a bounded chunk of rows
    of `table` ("pending", then "seen") after the key `after`, and sends the next
    (streams.runtime.sweep); the timer's record starts at the beginning (`{}`)."""

    KIND: ClassVar[bytes] = b"sweep"
    table: str = "pending"
    after: str | None = None

    def body(self) -> dict[str, Any]:
        if self == Sweep():
            return {}
        return {"table": self.table, "after": self.after}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Sweep:
        return cls(body.get("table") or "pending", body.get("after"))


@dataclass(frozen=True)
class Park:
    """A delivery failed in a retryable way after the quick retries: keep it in the
    user's parked queue for `destination`. `released_seq` is set when the event came
    out of `releasing` (it leaves that queue); `seq`, the number of a call sent at once
    (`streams.core.outcome.Dispatch.seq`), so that the same delivery parked twice (its
    call redone after a crash) is parked once. Without either (a window's request, a
    record of an earlier version) it is numbered from the park record's position."""

    KIND: ClassVar[bytes] = b"park"
    destination: str
    released_seq: int | None
    parked: Parked
    seq: int | None = None

    def body(self) -> dict[str, Any]:
        body = {"destination": self.destination, "released_seq": self.released_seq, "parked": self.parked.to_dict()}
        return body if self.seq is None else {**body, "seq": self.seq}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Park:
        return cls(body["destination"], body.get("released_seq"), Parked.from_dict(body["parked"]), body.get("seq"))


@dataclass(frozen=True)
class RetryDue:
    """To one partition (empty key): these users have parked deliveries due."""

    KIND: ClassVar[bytes] = b"retry-due"
    keys: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {"keys": list(self.keys)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RetryDue:
        return cls(tuple(body["keys"]))


def retry_due_records(keys: Sequence[str], *, max_keys: int, max_bytes: int) -> list[RetryDue]:
    """`keys` (one partition's) as `retry-due` records of at most `max_keys` keys and
    about `max_bytes` bytes each: after downtime every user with parked deliveries is
    due at once, and one record listing them all could pass Kafka's 1 MB limit."""
    out: list[RetryDue] = []
    chunk: list[str] = []
    size = len(b'{"keys": []}')
    for key in keys:
        cost = len(json.dumps(key).encode("utf-8")) + 2  # the key and ", "
        if chunk and (len(chunk) >= max_keys or size + cost > max_bytes):
            out.append(RetryDue(tuple(chunk)))
            chunk, size = [], len(b'{"keys": []}')
        chunk.append(key)
        size += cost
    if chunk:
        out.append(RetryDue(tuple(chunk)))
    return out


@dataclass(frozen=True)
class Retried:
    """The outcome of retrying parked head `seq` of `destination`: `attempts` HTTP
    attempts, the last answer's `status` (None: no answer), its `error` text and the
    partner's `retry_after` seconds."""

    KIND: ClassVar[bytes] = b"retried"
    destination: str
    seq: int
    outcome: Outcome
    attempts: int = 1
    status: int | None = None
    error: str = ""
    retry_after: float | None = None

    def body(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "seq": self.seq,
            "outcome": self.outcome.value,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
            "retry_after": self.retry_after,
        }

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Retried:
        return cls(
            body["destination"],
            body["seq"],
            Outcome(body["outcome"]),
            body.get("attempts", 1),
            body.get("status"),
            body.get("error", ""),
            body.get("retry_after"),
        )


@dataclass(frozen=True)
class WindowClose:
    """To one partition (empty key): these users have aggregation windows that closed."""

    KIND: ClassVar[bytes] = b"window-close"
    keys: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {"keys": list(self.keys)}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WindowClose:
        return cls(tuple(body["keys"]))


@dataclass(frozen=True)
class WindowDone:
    """To a user: the request of closed window `window` was delivered, parked or
    dead-lettered (it is no longer the window's to send): remove the window."""

    KIND: ClassVar[bytes] = b"window-done"
    window: str

    def body(self) -> dict[str, Any]:
        return {"window": self.window}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WindowDone:
        return cls(body["window"])


@dataclass(frozen=True)
class CaughtUp:
    """To one partition (empty key), from the worker it was just assigned to, at the end
    of the log: once `token` is read back, every record an earlier owner left in the
    partition has been read (streams.runtime.catchup)."""

    KIND: ClassVar[bytes] = b"caught-up"
    token: str

    def body(self) -> dict[str, Any]:
        return {"token": self.token}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CaughtUp:
        return cls(str(body["token"]))


Control = (
    PendingDone
    | MergeRequest
    | MergeProfile
    | MergeDone
    | GroupUpdate
    | GroupWait
    | GroupKnown
    | Sweep
    | Park
    | RetryDue
    | Retried
    | WindowClose
    | WindowDone
    | CaughtUp
    | SpillDone
)
_ALL = (
    PendingDone,
    MergeRequest,
    MergeProfile,
    MergeDone,
    GroupUpdate,
    GroupWait,
    GroupKnown,
    Sweep,
    Park,
    RetryDue,
    Retried,
    WindowClose,
    WindowDone,
    CaughtUp,
    SpillDone,
)
KINDS: Mapping[bytes, type[Control]] = MappingProxyType({kind.KIND: kind for kind in _ALL})
TO_PARTITION = (Sweep, RetryDue, WindowClose, CaughtUp)  # sent to one partition with an empty key, not to a user


def encode(record: Control) -> tuple[bytes, dict[str, bytes]]:
    """The record's value and headers."""
    return json.dumps(record.body()).encode(), {KIND_HEADER: record.KIND}


def kind_of(headers: Mapping[str, bytes]) -> type[Control] | None:
    """The control record class named by a record's headers; None for a Segment call
    (no kind header, or one this version does not know, which is then read as a
    Segment call, as earlier versions did)."""
    kind = headers.get(KIND_HEADER)
    return KINDS.get(bytes(kind)) if kind is not None else None


def decode(headers: Mapping[str, bytes], value: bytes) -> Control | None:
    """The control record in a by-user record, or None for a Segment call. A control
    record that cannot be read raises (ValueError, KeyError, TypeError)."""
    kind = kind_of(headers)
    if kind is None:
        return None
    return kind.from_body(json.loads(value))
