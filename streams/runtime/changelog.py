"""The changelog writes an event makes, awaited before the event is acknowledged.

Faust writes a table change to the table's changelog topic through its producer
buffer, in the background: `table[key] = value` returns before Kafka has the record,
and a record Kafka refuses is only logged. Faust's commit flushes that buffer first,
but not to the end (`streams.runtime.faust_fixes`, patch 2, bounds the flush so that
commits happen at all under load). So an event whose only effect is a table write (a
hold, a park record applied, a pending-done) could be committed before its write was
durable, and a crash then lose it.

`ChangelogWrites.watch(table)` wraps the table's `send_changelog` (through which every
`__setitem__` and `del` of a Faust table goes) so that, while a batch of events is
handled (`during()`), the futures of its writes are collected. The agents add them to
the work of each event of the batch (`streams.runtime.intake.handle`): an event is
acknowledged once Kafka has acknowledged every write of its batch, and a write Kafka
refuses is work that failed for good (the worker stops: `Runtime.failed_for_good`),
never a commit past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class ChangelogWrites:
    def __init__(self) -> None:
        self._collecting: list[Awaitable[Any]] | None = None

    def watch(self, table: Any) -> None:
        """Collect the changelog writes of `table` (a Faust table) made during an event."""
        send = table.send_changelog

        def send_changelog(*args: Any, **kwargs: Any) -> Any:
            written = send(*args, **kwargs)
            if self._collecting is not None and written is not None:
                self._collecting.append(written)
            return written

        table.send_changelog = send_changelog

    def collected(self) -> list[Awaitable[Any]]:
        """The list the current event's writes go to (complete once its handler has
        returned), for work that must wait for them; empty outside an event."""
        return self._collecting if self._collecting is not None else []

    @contextmanager
    def during(self) -> Iterator[list[Awaitable[Any]]]:
        """The writes made until the block ends (handling is synchronous: no other
        event's writes can come in between). A block inside another (a packed dedupe
        row written while an event is handled: streams.runtime.seenpacks) collects its
        own writes, and the outer block goes on collecting after it."""
        collected: list[Awaitable[Any]] = []
        outer, self._collecting = self._collecting, collected
        try:
            yield collected
        finally:
            self._collecting = outer


def joined(writes: Sequence[Awaitable[Any]]) -> asyncio.Future[Any] | None:
    """One future for a batch's changelog writes: done once all are, failed with the
    first that fails, cancelled if one is cancelled (its partition revoked); None for a
    batch that wrote nothing. A packed dedupe row is among them once, however many of
    the batch's events joined it."""
    futures = list({id(f): f for f in map(asyncio.ensure_future, writes)}.values())
    if not futures:
        return None
    if len(futures) == 1:
        return futures[0]
    together: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    left = [len(futures)]

    def one_done(f: asyncio.Future[Any]) -> None:
        if together.done():
            return
        if f.cancelled():
            together.cancel()
        elif (exc := f.exception()) is not None:
            together.set_exception(exc)
        else:
            left[0] -= 1
            if left[0] == 0:
                together.set_result(None)

    for f in futures:
        f.add_done_callback(one_done)
    return together
