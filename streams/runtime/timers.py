"""What a timer's failure does: a line in the log and a counter, never the worker's end.

Faust stops the app when a timer raises, so a produce that fails once (a broker
restarting, a metadata timeout) would stop every worker at the same moment. `guarded`
runs one round of a timer: an exception is logged with the timer's name, counted
(`timer_failed.<name>` in the counters, `cs_relay_app_events_total` in metrics), and the
round is tried again after `delay` seconds, doubling, up to `attempts` times; after that
the timer's next round tries again. Cancellation (the worker stopping) goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streams.runtime.runtime import Runtime

log = logging.getLogger("cs_relay")


async def guarded(
    rt: Runtime, name: str, round_: Callable[[], Awaitable[Any]], *, attempts: int = 1, delay: float = 1.0
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await round_()
            return
        except Exception:  # noqa: BLE001 - any failure of one round: logged, retried, never fatal
            rt.counters[f"timer_failed.{name}"] += 1
            again = f"again in {delay:g} s" if attempt < attempts else "again at its next round"
            log.exception("%s failed (attempt %d of %d); it runs %s", name, attempt, attempts, again)
        if attempt < attempts:
            await asyncio.sleep(delay)
            delay *= 2
