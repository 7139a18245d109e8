"""The runtime's acknowledgements (`Acks`, the runtime's `acks`): each partition's events
acknowledged in offset order once their work is done (`streams.runtime.inflight.
AckTracker`, which it is), and the guard against a record taken twice within one
assignment (`redeliveries`, `streams.runtime.inflight.Redeliveries`).

`revoked(tps)`: the events of revoked partitions are never acknowledged here (whoever
reads them next does their work again), and a partition assigned again starts over
from its committed offset. An assignment adds nothing: the partitions' events register
as they are read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from streams.runtime.inflight import AckTracker, Redeliveries


class Acks(AckTracker):
    def __init__(self, on_failure: Callable[[Hashable, BaseException], Any] | None = None) -> None:
        super().__init__(on_failure)
        self.redeliveries = Redeliveries()

    def revoked(self, tps: Iterable[Hashable]) -> None:
        tps = list(tps)
        self.redeliveries.forget(tps)
        self.forget(tps)
