"""`python -m devtools.memusers`: the Python-side bytes a worker keeps per user, outside its tables.

Runs the real runtime without a broker (tests/runtime_world.py: plain dicts for tables,
a scripted partner) through `--users` users, one track each after `--groups` group
calls (scenario f's shape), then empties the tables and reports, with tracemalloc,
what the runtime still holds per user: its counts, marks, caches and indexes. With
`--outage` ClientSuccess answers 503 to every request, so each user's delivery is
parked (its pending record, its retry mark, its parked-since entry, its counts).
A figure to compare before and after a change, not a timed result.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import tracemalloc
from typing import Any

# The test suite's broker-free world, loaded by name: devtools is type-checked, tests are not.
runtime_world: Any = importlib.import_module("tests.runtime_world")


async def run(users: int, groups: int, outage: bool) -> dict[str, Any]:
    world = runtime_world.World({"CS_RELAY_PENDING_MAX_AGE_SECONDS": "3600"}, client=runtime_world.FakeClient())
    for g in range(groups):
        await world.publish(
            type="group", userId=f"user-{g:06d}", groupId=f"group-{g:05d}", traits={"name": f"G{g}"}, messageId=f"g{g}"
        )
    if outage:
        world.client.answers = [503] * (users * 2)
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for u in range(users):
        await world.publish(
            type="track",
            userId=f"user-{u:06d}",
            event="Signed Up",
            messageId=f"t{u}",
            context={"groupId": f"group-{u % groups:05d}"},
        )
    gc.collect()
    with_tables = tracemalloc.get_traced_memory()[0]
    tables = world.tables
    for table in (tables.users, tables.pending, tables.seen, tables.payloads, tables.windows, tables.waiters):
        table.clear()
    world.outbox.records.clear()
    world.client.requests.clear()  # the scripted partner keeps every request
    world.routed = 0
    world.taken.clear()
    world.acked.clear()
    gc.collect()
    without_tables = tracemalloc.get_traced_memory()[0]
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    tracemalloc.stop()
    for stat in top:
        print("  ", stat)
    return {
        "users": users,
        "outage": outage,
        "parked_users": len(world.rt.parking.marks.retry_due_at),
        "bytes_per_user_with_tables": round((with_tables - start) / users, 1),
        "bytes_per_user_outside_tables": round((without_tables - start) / users, 1),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.memusers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--outage", action="store_true", help="ClientSuccess answers 503: every delivery parks")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.users, args.groups, args.outage))))


if __name__ == "__main__":
    main()
