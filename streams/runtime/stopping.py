"""How a stopping worker says what it could not flush, and the deadline that ends it.

A worker told to stop (SIGTERM, Ctrl-C, or a crash) waits for its in-flight deliveries
for up to CS_RELAY_SHUTDOWN_TIMEOUT, commits what they acknowledged, and lets Faust stop
its consumer, producer, tables and web server (`streams.runtime.relayapp.RelayApp`).
Parts of Faust's stop wait on the broker: with the broker gone, or killed while the
worker stops, the consumer thread's stop alone waited 60 s, and a worker was seen
running 50 s after SIGTERM. `StopDeadline` is a thread that ends the process with
`os._exit` once the stop has taken `STOP_GRACE` seconds past the shutdown timeout,
after one line saying what was left (`Unflushed.line`). What is left is never lost:
unacknowledged events are processed again after the restart, as after a crash.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("cs_relay")

# Seconds a stop may take beyond CS_RELAY_SHUTDOWN_TIMEOUT (the final commit, Faust's
# own stop) before the deadline ends the process; the promise is "within the timeout
# plus 10 s", and the line and the exit take well under the rest.
STOP_GRACE = 8.0
FINAL_COMMIT_TIMEOUT = 5.0  # the final commit's share of the grace
DEADLINE_EXIT_STATUS = 1  # the stop did not finish: what was left is redone after the restart
_LOG_WAIT = 1.0  # seconds the deadline waits for its line to be logged (the loop may hold a lock)


@dataclass(frozen=True)
class Unflushed:
    """What a stopping worker has not finished: `unacknowledged` events (their offsets not
    committed), user deliveries still running, records not yet handed to Kafka's
    producer, and whether the final commit was made."""

    unacknowledged: int = 0
    deliveries: int = 0
    unsent: int = 0
    committed: bool = True

    @property
    def nothing(self) -> bool:
        return not (self.unacknowledged or self.deliveries or self.unsent) and self.committed

    def line(self) -> str:
        if self.nothing:
            return "nothing left unflushed: every event acknowledged and committed"
        parts = [
            f"{self.unacknowledged} unacknowledged events",
            f"{self.deliveries} deliveries in flight",
            f"{self.unsent} records not sent to Kafka",
        ]
        if not self.committed:
            parts.append("final commit not made")
        return "not flushed: " + ", ".join(parts) + " (the events are processed again after the restart)"


class StopDeadline:
    """A daemon thread that logs `report()`'s line and ends the process `after` seconds
    from `start()`, however stuck the event loop is (a stop that finishes first ends
    the process, and the thread with it)."""

    def __init__(
        self,
        after: float,
        report: Callable[[], str],
        *,
        end: Callable[[int], object] = os._exit,  # the tests give their own
        status: int = DEADLINE_EXIT_STATUS,
    ) -> None:
        self.after = after
        self._report = report
        self._end = end
        self._status = status
        self._thread: threading.Thread | None = None

    def start(self) -> StopDeadline:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cs-relay-stop-deadline", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        time.sleep(self.after)
        try:
            line = f"stop did not finish within {self.after:.0f} s, exiting now; {self._report()}"
        except Exception as exc:  # noqa: BLE001 - the exit matters more than the details
            line = f"stop did not finish within {self.after:.0f} s, exiting now (what was left is unknown: {exc!r})"
        # Through logging (the worker's format), unless the stuck loop holds a handler's lock.
        writer = threading.Thread(target=log.error, args=(line,), daemon=True)
        writer.start()
        writer.join(_LOG_WAIT)
        if writer.is_alive():
            os.write(sys.stderr.fileno(), (line + "\n").encode())
        self._end(self._status)
