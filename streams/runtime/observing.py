"""What the runtime tells whoever watches it work, and nothing it needs back.

The runtime calls an `Observer` at a few points of an event's path: a dead letter
about to be written and once written (`effects.dead_letter`), a delivery beginning
and answered (`senders.deliver`, `retries.retry_one`), a Segment call routed
(`routing.route_call`). The worker's operator side (`streams.ops.observer`: the
metrics of /metrics and /status, the console's journal, event ids in log lines)
implements it, and the app's wiring (`streams.runtime.app`) connects the two: no
other runtime module imports `streams.ops` (tests/test_runtime_imports.py).
`Unobserved` is the runtime's own default, for a runtime nobody watches.
"""

from __future__ import annotations

from typing import Any, Protocol

from streams.core.outcome import DeadLetter
from streams.core.retry import Outcome


class Observer(Protocol):
    def dead_lettering(self, dead: DeadLetter) -> None:
        """A dead letter is about to be written (its log lines follow)."""

    def dead_lettered(self, now: float) -> None:
        """The dead-letter topic has taken one, at `now`."""

    def delivering(self, message_id: str) -> None:
        """A delivery of the event `message_id` begins (in the task that runs it)."""

    def delivery(
        self,
        key: str,
        destination: str,
        message_id: str,
        outcome: Outcome,
        status: int | None,
        now: float,
        *,
        retry: bool = False,
    ) -> None:
        """A partner answered a delivery (`retry`: of a parked one); status None: no answer."""

    def routed(self, key: str, msg: Any, user: Any, group: Any, now: float) -> None:
        """A call of user `key` was routed: `user` is its record after it, `group` the
        group a group call wrote (else None)."""


class Unobserved:
    """An `Observer` that keeps nothing."""

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    dead_lettering = dead_lettered = delivering = delivery = routed = _nothing
