"""Which by-user partition a user key lives in: Kafka's default partitioner, as the
by-user topic's producer applies it. The runtime routes and owns users by it
(`Partitioner`: the runtime's `partition_of`); the admin endpoints and the console
find a user's worker by it (`streams.ops.admin`, `streams.ops.ownership`)."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.partitioner import murmur2


def owner_partition(key: str, partitions: int) -> int:
    """The by-user partition of a user key: Kafka's default partitioner (murmur2 of
    the key's UTF-8 bytes), as `by_user_topic.send(key=key.encode())` picks it."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


class Partitioner:
    """`owner_partition` over the by-user partitions, a count known once the topic is
    (`partitions()`): called with a user key, its partition."""

    __slots__ = ("partitions",)

    def __init__(self, partitions: Callable[[], int]) -> None:
        self.partitions = partitions

    def __call__(self, key: str) -> int:
        return owner_partition(key, self.partitions())
