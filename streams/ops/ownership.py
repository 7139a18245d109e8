"""Which worker serves a user's state: the worker whose active partitions include the
user's by-user partition (`streams.partitioner`), for `streams.ops.admin`'s forwarding
and the console; and what a worker's recovery still has to read before it serves its
partitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from yarl import URL


def owner_url(metadata: Mapping[str, Mapping[str, Iterable[int]]], partition: int) -> str | None:
    """The worker URL whose active partitions (of one table's changelog, as
    `app.router.table_metadata` lists them) include `partition`."""
    for url, topics in metadata.items():
        if any(partition in partitions for partitions in topics.values()):
            return url
    return None


def same_worker(a: str | URL, b: str | URL) -> bool:
    a, b = URL(str(a)), URL(str(b))
    return (a.host, a.port) == (b.host, b.port)


def changelog_remaining(highwaters: Mapping[Any, int | None], offsets: Mapping[Any, int | None]) -> int:
    """Changelog records still to read for a set of table partitions: per partition,
    its highwater (the offset of its last record, -1 when empty, as Faust's recovery
    keeps it) less the offset read so far (-1 before the first); unknowns count 0."""
    total = 0
    for tp, highwater in highwaters.items():
        offset = offsets.get(tp)
        if highwater is not None and offset is not None and highwater > offset:
            total += highwater - offset
    return total
