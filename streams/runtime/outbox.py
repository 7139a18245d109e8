"""Where the runtime's records go: the by-user topic (re-keyed events, forwarded
events, control records) and the dead-letter topic.

The runtime sees an `Outbox`; `FaustOutbox` is the one on Kafka, and unit tests give a
fake that keeps what was produced. `send` hands the record to the producer before it
returns (so records sent one after another keep that order in the partition) and
returns what resolves once Kafka has acknowledged it. `by_user(key=, value=, headers=)`
is `send` to the by-user topic, for the intake's re-keying of each input record:
`FaustOutbox`'s is the topic's own `send` (Faust's), so that no call of ours is between
the intake and the producer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import faust

BY_USER = "by-user"
DEAD_LETTERS = "dead-letters"


class Outbox(Protocol):
    @property
    def by_user(self) -> Callable[..., Awaitable[Awaitable[Any]]]:
        """`send(BY_USER, ...)`: keyword arguments only, headers a dict."""
        ...

    async def send(
        self,
        to: str,
        *,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes],
        partition: int | None = None,
    ) -> Awaitable[Any]:
        """Hand a record for topic `to` (BY_USER or DEAD_LETTERS) to the producer; the
        result resolves when Kafka acknowledged it (or fails)."""
        ...


async def produce(outbox: Outbox, to: str, **record: Any) -> None:
    """Send a record and wait for Kafka's acknowledgement."""
    acknowledged = await outbox.send(to, **record)
    await acknowledged


class FaustOutbox:
    """The outbox on Kafka: Faust's producer, through the app's topics."""

    def __init__(self, by_user: faust.TopicT, dead_letters: faust.TopicT) -> None:
        self._topics = {BY_USER: by_user, DEAD_LETTERS: dead_letters}
        self.by_user: Callable[..., Awaitable[Awaitable[Any]]] = by_user.send

    async def send(
        self,
        to: str,
        *,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes],
        partition: int | None = None,
    ) -> Awaitable[Any]:
        return await self._topics[to].send(key=key, value=value, headers=dict(headers), partition=partition)
