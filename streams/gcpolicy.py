"""Python's cyclic garbage collector in the worker: what start-up made is frozen, and
the youngest generation is collected less often.

CPython's full (generation 2) collection walks every object the collector tracks. A
worker tracks a few hundred thousand: the modules, classes and functions of Faust,
mode, aiokafka, aiohttp and cs-relay, then the row caches' rows. In `make bench`
scenario a (2026-12-07, gc.callbacks in the worker) a full collection took 40-137 ms on
the 2-core machine, in bursts of up to nine within a second while the caches filled;
every event read meanwhile waited for them, and the paced phase's p99 latency was
108 ms.

`settle()` is called by `cs-relay worker` once the app is imported, just before Faust
starts it: one collection, then `gc.freeze()`, which moves every object alive then to
a generation no collection walks again (they live as long as the process does), and
the youngest generation's threshold raised from CPython's 700 to GEN0 allocations, so
that fewer collections move short-lived objects (an event's dicts, a request's
futures) into the older generations. The collector stays on: cycles are still found,
only less often.
"""

from __future__ import annotations

import gc

GEN0 = 10_000  # allocations between collections of the youngest generation (CPython: 700)


def settle(gen0: int = GEN0) -> None:
    """Freeze what is alive now and collect the youngest generation every `gen0`
    allocations (the older generations' thresholds unchanged)."""
    if gen0 < 1:
        raise ValueError("gen0 must be at least 1")
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
