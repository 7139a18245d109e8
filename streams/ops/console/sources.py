"""What the console reads and does, as one object: the worker builds it from its Admin
and runtime (`web.install`), unit tests from dicts and fakes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from streams.core.deadletter import DeadLetterRecord
from streams.ops.console.deadletters import Recent
from streams.ops.console.journal import Journal


@dataclass(frozen=True)
class Located:
    """Where a user key lives: here, at `owner` (another worker), or nowhere yet."""

    partition: int | None
    owner: str | None = None  # set: another worker's URL
    unavailable: str | None = None  # set: why no worker can answer now


@dataclass
class Sources:
    """What the console reads and does; the worker builds it from its Admin and
    runtime (`install`), unit tests from dicts and fakes."""

    token: str = field(repr=False)
    journal: Journal
    destinations: Mapping[str, str]  # key -> display name, the enabled ones
    users: Any  # tables: anything with .get
    pending: Any
    groups: Any
    status: Callable[[], Mapping[str, Any]]  # streams.ops.observe.status_document
    counts: Callable[[], Mapping[str, Mapping[str, int]]]  # journal.destination_counts now
    locate: Callable[[str], Located]
    # the request, the owner's URL, headers to add (Admin.forward: with the admin token)
    forward: Callable[[web.Request, str, Mapping[str, str]], Awaitable[web.StreamResponse]]
    dead_letters: Callable[[], Awaitable[Recent]]  # deadletters.read_recent: the topic's latest
    replay: Callable[[Sequence[DeadLetterRecord]], Awaitable[int]]  # dlq.replay_records
    # the previews of one user's messages by the worker that owns the user, as its
    # `POST /preview/{userId}` answers them (`streams.ops.preview_api`); None: no previews
    preview: Callable[[str, Sequence[bytes]], Awaitable[list[dict[str, Any]]]] | None = None
    secrets: Sequence[str] = field(default=(), repr=False)
    worker: str = ""
    input_topic: str = ""
    clock: Callable[[], float] = time.time
