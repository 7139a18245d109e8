"""The operator's side of a running worker: what the runtime reports as it works (the
`streams.runtime.observing.Observer` calls), kept for `/metrics` and `/status`
(`Stats`, streams.ops.observe), for the console (`Journal`, streams.ops.console.journal)
and for log lines (the event's messageId, streams.ops.logs). The app's wiring
(`streams.runtime.app`) builds one and hands it to the runtime and to the pages that
read it."""

from __future__ import annotations

from typing import Any

from streams.core.outcome import DeadLetter
from streams.core.retry import Outcome
from streams.ops.console.journal import Journal
from streams.ops.logs import bind_event_id, bind_event_raw
from streams.ops.observe import Stats


class OpsObserver:
    def __init__(self) -> None:
        self.stats = Stats()  # partner answers (PartnerClient.on_attempt) and dead letters
        self.journal = Journal()  # recent work, bounded, for the operator console

    def dead_lettering(self, dead: DeadLetter) -> None:
        """Counted, and the log lines about it carry its messageId."""
        self.stats.dead_letter(dead.stage, dead.reason, dead.destination)
        bind_event_raw(dead.raw)

    def dead_lettered(self, now: float) -> None:
        self.journal.dead_letter(now)  # the console's dead-letters page reads the topic again

    def delivering(self, message_id: str) -> None:
        bind_event_id(message_id)  # the delivery task's log lines carry the event's messageId

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
        self.journal.delivery(key, destination, message_id, outcome, status, now, retry=retry)

    def routed(self, key: str, msg: Any, user: Any, group: Any, now: float) -> None:
        self.journal.routed(key, msg, user, group, now)  # the console's group and account index
