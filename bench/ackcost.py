"""CPU of the acknowledgements alone: `AckTracker` registering and acknowledging
`--events` events of two deliveries each and one changelog write per batch of
`--batch`, the work ending in order, `--chunk` pieces per loop turn (64: deliveries
coming back at a partner's pace under load; 1: a quiet worker, each piece its own
turn), on uvloop; the median of 7 runs, thread CPU per event (the loop's own turns
included).

Compare two trees by running this file with each tree first on the path, alternately:

    PYTHONPATH=<tree> python bench/ackcost.py --batch 16 --chunk 64 [--shared future]

An older `AckTracker.add_batch` took the batch's shared work as one future (`--shared
future`); today's takes a list of them (the default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop

from streams.runtime.acks import AckTracker


async def one_run(events: int, batch: int, chunk: int, shared_as: str) -> float:
    loop = asyncio.get_running_loop()
    acks = AckTracker(max_events=10**9)
    acked = [0]

    def ack() -> None:
        acked[0] += 1

    pending: list[asyncio.Future[Any]] = []
    started = time.thread_time()
    for first in range(0, events, batch):
        shared = loop.create_future()
        registered = []
        for _ in range(batch):
            own = [loop.create_future(), loop.create_future()]
            pending.extend(own)
            registered.append((("t", (first // batch) % 4), ack, own, 100))
        acks.add_batch(registered, shared if shared_as == "future" else [shared])  # type: ignore[arg-type]
        pending.append(shared)
        if len(pending) >= 4 * chunk:
            for future in pending[:chunk]:
                future.set_result(None)
            del pending[:chunk]
            await asyncio.sleep(0)
    for start in range(0, len(pending), chunk):
        for future in pending[start : start + chunk]:
            future.set_result(None)
        await asyncio.sleep(0)
    while acked[0] < events:
        await asyncio.sleep(0)
    if hasattr(acks, "stop"):  # an older tree's tracker had no coroutines to end
        acks.stop()
    return (time.thread_time() - started) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--shared", choices=("list", "future"), default="list")
    args = parser.parse_args()
    runs = [uvloop.run(one_run(args.events, args.batch, args.chunk, args.shared)) for _ in range(7)]
    print(f"batch {args.batch}, chunk {args.chunk}: {statistics.median(runs):.2f} us per event (min {min(runs):.2f})")


if __name__ == "__main__":
    main()
