"""How fast this machine's cores run a fixed piece of Python work, as a drain goes.

Why: the same worker's CPU per track differs by up to 2x between drains of one run on
this shared VM, and so does work that is the same in every drain (opening RocksDB,
importing modules: twice the py-spy samples in the slow drains of 2026-12-07). A fixed
piece of work (`unit`: dicts, f-strings and JSON, as a worker's step does) timed in CPU
seconds after each pause of `EVERY` seconds, in a process of its own (`python -m bench.speedprobe`,
so that it holds no process's GIL and takes no turn of the bench's event loop), says
how fast the cores ran meanwhile. A drain reports the median of its samples against
the fastest the probe has run in the bench run so far (scenario a: in a;
`stats.machine_speed`): 1.0 is as fast as seen, 0.5 half as fast. The reference is an
extreme, the fastest sample, and moves as the run goes: a drain also keeps the median
µs and the reference (`stats.probe_figures`), so that drains of different runs can be
set against one reference.

Its cost: 10 units a sample, 3-5 ms of CPU every quarter second (about 2 % of a core),
in bursts of that length on whichever core the scheduler gives it; and a Python start
with its calibration (about 0.1 s of CPU) as each drain's worker starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

EVERY = 0.25  # seconds between samples
CALIBRATION = 20  # samples back to back at the start: the fastest of them is the first line's


def unit() -> int:
    """The fixed work: 200 small dicts built, dumped and parsed as JSON."""
    rows = {}
    for i in range(200):
        key = f"user-{i:06d}"
        rows[key] = {"id": key, "n": i, "tags": [i, i + 1]}
    text = json.dumps(rows)
    return len(json.loads(text))


def sample(units: int = 8, warm: int = 2) -> int:
    """CPU µs of `units` units of work on this thread, after `warm` units untimed (after
    its sleep, the probe's first units find its caches cold: timed, a sample would say
    less of the cores than of the pause)."""
    for _ in range(warm):
        unit()
    started = time.thread_time_ns()
    for _ in range(units):
        unit()
    return (time.thread_time_ns() - started) // 1000


def main(argv: list[str] | None = None) -> None:
    """Print `<unix µs> <CPU µs of a sample>` lines: first the fastest of a calibration
    burst, then one every `--every` seconds, until killed or stdout closes."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.speedprobe", description="How fast this machine's cores run a fixed piece of work."
    )
    parser.add_argument("--every", type=float, default=EVERY)
    args = parser.parse_args(argv)
    try:
        print(time.time_ns() // 1000, min(sample() for _ in range(CALIBRATION)), flush=True)
        while True:
            time.sleep(args.every)
            print(time.time_ns() // 1000, sample(), flush=True)
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)


if __name__ == "__main__":
    main()
