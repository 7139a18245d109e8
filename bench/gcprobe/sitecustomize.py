"""Every garbage collection of a bench's worker, logged (docs/benchmarks.md, 2026-12-07,
morning): put this folder on the worker's PYTHONPATH and name a folder for the logs,

    GCPROBE_DIR=/tmp/gc PYTHONPATH=bench/gcprobe python -m bench --scenarios a

and each `cs-relay worker` (any process whose command line names a worker) writes
`gc-<pid>.log`: a line per collection of generation 1 or 2, or of any generation that
took over 5 ms: its end time, generation, milliseconds, objects collected and, for a
full collection, the objects left in the oldest generation.
"""

import gc
import os
import sys
import time

_dir = os.environ.get("GCPROBE_DIR")
if _dir and "worker" in " ".join(sys.argv):
    _log = open(os.path.join(_dir, f"gc-{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _start = [0.0]

    def _probe(phase: str, info: dict) -> None:
        if phase == "start":
            _start[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _start[0]) * 1000
        generation = info["generation"]
        if generation >= 1 or ms > 5:
            left = len(gc.get_objects(2)) if generation == 2 else ""
            _log.write(f"{time.time():.3f} gen{generation} {ms:.1f}ms collected={info['collected']} objs={left}\n")

    gc.callbacks.append(_probe)
