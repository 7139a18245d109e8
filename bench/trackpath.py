"""Which runtime modules one track passes through, from the agent to its two partner
requests, measured in a real worker (docs/architecture.md, "One track's path").

Starts the partner mocks (ClientSuccess and CustomerSuccessBox; the webhook left off)
and one worker on a pipeline of its own at $KAFKA_BOOTSTRAP_SERVERS, with
`bench.tracehook` profiling its event loop's thread. A warm-up user's group call and
track, and the traced user's group call, go first (first-time paths left out); then
one track of that user is produced, and the window closes once both mocks have its
request and the worker has acknowledged it (`/status`: no unacknowledged event).

What counts: in that window, every call into a `streams.runtime` module from another
module (or from the event loop: a task's first step, a callback), leaving out what
the timers and web requests started (`NOT_THE_TRACKS`). A coroutine resumed after an
await is listed apart (`resumed`): it continues a call, it does not enter anew. Faust
calls the Monitor's hooks (`streams.runtime.monitor`) for every event: they count.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092 python -m bench.trackpath [--json | --markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from streams import childproc
from streams.ops.webserve import free_port
from streams.testing.partners import PartnerMocks
from streams.testing.pipeline import Pipeline, Worker

REPO = Path(__file__).resolve().parents[1]
# What started work that is not the track's: the app's timers (Faust runs each in a
# service task) and web requests (this harness polls /status).
NOT_THE_TRACKS = ("task mode.services:", "task aiohttp.")


def on_the_path(record: Sequence[Any]) -> bool:
    """Work of the track: of the agents' tasks, the senders' tasks, or a
    callback (a packed row's flush, an acknowledgement, a produce's completion)."""
    return not record[5].startswith(NOT_THE_TRACKS)


def summary(records: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Per runtime module, in the order the track reaches it: the calls into it from
    elsewhere (`entered`) and the coroutines of it resumed from elsewhere (`resumed`);
    the calls within a module left out."""
    entries: Counter[str] = Counter()
    resumed: Counter[str] = Counter()
    first: dict[str, str] = {}
    roots: Counter[str] = Counter()
    edges: Counter[str] = Counter()
    for _t, module, qualname, caller, fresh, root in records:
        roots[root] += 1
        if caller == module:
            continue  # within the module
        edges[f"{caller} -> {module}"] += 1
        if fresh:
            entries[module] += 1
        else:
            resumed[module] += 1
        first.setdefault(module, f"{qualname} ({'called' if fresh else 'resumed'} from {caller})")
    return {
        "modules": len(first),
        "entries": sum(entries.values()),
        "by_module": {m: {"entered": entries[m], "resumed": resumed[m], "first": first[m]} for m in first},
        "roots": dict(roots.most_common()),
        "edges": dict(edges.most_common()),
    }


async def _status(worker: Worker) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{worker.web_port}/status") as response:
            return await response.json()


async def trace(bootstrap: str, root: Path) -> dict[str, Any]:
    mocks = PartnerMocks()
    pipeline = Pipeline(bootstrap, mocks, root, partitions=1, owns_mocks=True)
    trace_file = root / "trace.json"
    try:
        port = free_port()
        env = pipeline.worker_env(CS_RELAY_WEB_PORT=str(port), TRACE_FILE=str(trace_file), WEBHOOK_URL="")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        log = root / "worker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.tracehook"],
                env=env,
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=childproc.dies_with_parent(),
            )
        worker = Worker(process, log, port)
        pipeline.workers.append(worker)
        await pipeline.wait_ready(worker, timeout=180)

        async def counts() -> tuple[int, int]:
            return len(await pipeline.cs_requests()), len(await pipeline.csb_requests())

        async def sent(message: dict[str, Any], cs: int, csb: int) -> None:
            """`message` produced, and done: `cs` and `csb` more requests at the mocks
            (ClientSuccess takes no group call), and every event acknowledged."""
            before = await counts()
            await pipeline.send(message)
            want = (before[0] + cs, before[1] + csb)
            await pipeline.eventually(counts, lambda c: c >= want, timeout=60, what=f"requests {want}")
            await pipeline.eventually(lambda: _status(worker), lambda s: s["unacknowledged_events"] == 0, what="acks")

        group = {"type": "group", "groupId": "g1", "traits": {"name": "Acme"}}
        await sent({**group, "userId": "warm", "messageId": "warm-g"}, 0, 1)
        await sent({"type": "track", "userId": "warm", "event": "Warm", "messageId": "warm-t"}, 1, 1)
        await sent({**group, "userId": "u1", "messageId": "u1-g"}, 0, 1)
        await asyncio.sleep(1.0)  # the warm-up's packed dedupe rows and commits behind it

        begin = time.time()
        await sent({"type": "track", "userId": "u1", "event": "Traced", "messageId": "u1-t"}, 1, 1)
        end = time.time()

        request = Path(f"{trace_file}.dump")
        request.touch()
        await pipeline.eventually(lambda: _exists(request), lambda there: not there, timeout=30, what="the trace")
        records = [r for r in json.loads(trace_file.read_text()) if begin <= r[0] <= end and on_the_path(r)]
        return {"window_seconds": round(end - begin, 3), "records": len(records), **summary(records)}
    finally:
        await pipeline.close()


async def _exists(path: Path) -> bool:
    return path.exists()


def _short(name: str) -> str:
    """`streams.runtime.rows` as `rows.py`, another module as itself, in backticks."""
    prefix = "streams.runtime."
    return f"`{name[len(prefix) :]}.py`" if name.startswith(prefix) else f"`{name}`"


def markdown_table(result: dict[str, Any]) -> str:
    """The per-module table docs/architecture.md shows ("One track's path"), made from
    a result of `trace` (tests/test_trackpath.py checks the doc against the newest
    `bench/results/*-trackpath.json`)."""
    lines = ["| module | entered | resumed | first entered |", "| --- | ---: | ---: | --- |"]
    for module, row in result["by_module"].items():
        qualname, _, rest = row["first"].partition(" (")
        how, _, caller = rest.rstrip(")").partition(" from ")
        first = f"`{qualname}` ({how} from {_short(caller)})"
        lines.append(f"| {_short(module)} | {row['entered']} | {row['resumed']} | {first} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="the whole result as JSON")
    parser.add_argument("--markdown", action="store_true", help="the table docs/architecture.md shows")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with tempfile.TemporaryDirectory(prefix="trackpath-") as tmp:
        result = asyncio.run(trace(bootstrap, Path(tmp)))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if args.markdown:
        print(markdown_table(result))
        return 0
    print(f"one track: {result['modules']} runtime modules, entered {result['entries']} times")
    for module, row in result["by_module"].items():
        print(f"  {module:34} entered {row['entered']:3}  resumed {row['resumed']:3}  first: {row['first']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
