"""`python -m bench.faustcost`: what Faust itself costs per event, on this machine.

A budget for reading the profile of a cs-relay worker (docs/benchmarks.md, "Where the
time goes"): a Faust 0.15 worker with cs-relay's app settings (RocksDB tables, the
producer linger, cs-relay's Faust fixes) drains 20,000 records of one topic (8
partitions) in each of these modes, one fresh worker process per mode:

* `auto`: `async for value in stream` (what the naive relay does per event);
* `events`: `stream.noack().events()`, acknowledging each event (what cs-relay does);
* `take`: `stream.take(500, within=0.01)`, the batched form Faust offers;
* `table`: `events`, plus one table write per event (cs-relay wrote the `seen` row of
  every call so): RocksDB, and a changelog record through Faust's producer buffer;
* `packed`: `events`, plus one dedupe entry per event as cs-relay writes it now
  (streams.runtime.seenpacks): its index row to RocksDB alone, and per partition one
  packed changelog record for the entries of the last few milliseconds;
* `batched`: `events` as cs-relay's agents take them since issue 23's micro-batches
  (streams.runtime.intake.batches: what the stream has buffered, a batch at a time,
  with its back-pressure and rebalance checks), acknowledging each event; also
  reports the events per batch.

Every mode runs with cs-relay's Faust fixes 1-3; `--drain batched` adds patch 4, the
fetch loop of streams.runtime.faust_drain (one `wait_first` per fetched batch, as the
worker runs), to compare with Faust's own (`--drain faust`, the default: as the naive
relay runs).

Reported: the worker's CPU per event (process time from its first event to its last),
nothing else is timed. Uses a local broker (`LocalKafka`) unless
KAFKA_BOOTSTRAP_SERVERS is set.
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
import uuid
from pathlib import Path
from typing import Any, cast

from streams.runtime.seenpacks import PACK_LINGER

MODES = ("auto", "events", "take", "table", "packed", "batched")
REPO = Path(__file__).resolve().parent.parent


def worker_main() -> None:  # pragma: no cover - runs in the measured process
    import faust

    from streams.runtime import faust_fixes
    from streams.runtime.relayapp import PRODUCER_LINGER  # the hop's 5 ms, as in its earlier figures

    faust_fixes.install(fetch_loop=os.environ.get("FC_DRAIN") == "batched")
    mode, count, out = os.environ["FC_MODE"], int(os.environ["FC_COUNT"]), Path(os.environ["FC_OUT"])
    app = faust.App(
        os.environ["FC_APP"],
        broker=f"kafka://{os.environ['FC_BOOTSTRAP']}",
        store="rocksdb://",
        datadir=os.environ["FC_DIR"],
        topic_partitions=8,
        producer_linger=PRODUCER_LINGER,
        consumer_auto_offset_reset="earliest",
        web_port=int(os.environ["FC_WEB_PORT"]),
        stream_wait_empty=False,
    )
    topic = app.topic(os.environ["FC_TOPIC"], key_serializer="raw", value_serializer="raw")
    if mode == "packed":
        from streams.core import dedupe
        from streams.runtime.acks import ChangelogWrites
        from streams.runtime.seenpacks import SeenPacks
        from streams.runtime.seentable import seen_table

        seen = seen_table(app, "seen", {})
        packs = SeenPacks(seen, ChangelogWrites(), linger=float(os.environ["FC_LINGER"]))
    else:
        seen = app.Table("seen", default=None)
    if mode == "batched":
        from collections import Counter
        from types import SimpleNamespace

        from streams.runtime import intake
        from streams.runtime.acks import Acks

        # What `batches` reads of the runtime.
        runtime = SimpleNamespace(
            acks=Acks(),
            settings=SimpleNamespace(max_unacked_bytes=64 * 1024 * 1024),
            counters=Counter(),
        )
        rt = cast(Any, runtime)
    taken = {"n": 0, "t0": 0.0, "batches": 0}

    def one() -> None:
        taken["n"] += 1
        if taken["n"] == 1:
            taken["t0"] = time.process_time()
        elif taken["n"] == count:
            per_event_us = (time.process_time() - taken["t0"]) / (count - 1) * 1e6
            rows = packs.written if mode == "packed" else 0
            result = {"mode": mode, "cpu_us": per_event_us, "rows": rows, "batches": taken["batches"]}
            out.write_text(json.dumps(result))
            os._exit(0)

    @app.agent(topic)
    async def drain(stream: faust.StreamT) -> None:
        if mode == "auto":
            async for _ in stream:
                one()
        elif mode == "batched":
            async for batch in intake.batches(rt, app, stream):
                taken["batches"] += 1
                for event, _record in batch:
                    event.ack()
                    one()
        elif mode == "take":
            async for batch in stream.take(500, within=0.01):
                for _ in batch:
                    one()
        else:
            async for event in stream.noack().events():  # type: ignore[attr-defined]
                message = event.message
                if mode == "table":
                    seen[f"{message.partition}:{message.offset}"] = [message.offset, 1.0]
                elif mode == "packed":
                    key = dedupe.row_key(str(message.partition), str(message.offset))
                    packs.remember(message.partition, key, message.offset, 1.0)
                event.ack()
                one()

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


async def _produce(bootstrap: str, topic: str, count: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 8, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        sent = []
        for i in range(count):
            user = f"u{i % 2000}"
            value = json.dumps({"type": "track", "userId": user, "event": "E", "messageId": f"m{i}"}).encode()
            sent.append(await producer.send(topic, value, key=user.encode()))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def measure(bootstrap: str, mode: str, count: int, linger: float = 0.0, drain: str = "faust") -> dict[str, float]:
    from streams.ops.webserve import free_port

    topic = f"faustcost-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce(bootstrap, topic, count))
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "result.json"
        env = {
            **os.environ,
            "FC_MODE": mode,
            "FC_COUNT": str(count),
            "FC_OUT": str(out),
            "FC_APP": topic,
            "FC_TOPIC": topic,
            "FC_BOOTSTRAP": bootstrap,
            "FC_DIR": str(Path(work) / "data"),
            "FC_WEB_PORT": str(free_port()),
            "FC_LINGER": str(linger),
            "FC_DRAIN": drain,
        }
        command = [sys.executable, "-m", "bench.faustcost", "--worker"]
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        if not out.exists():
            raise RuntimeError(f"the {mode} worker exited with {done.returncode}: {done.stderr[-2000:]}")
        return dict(json.loads(out.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faustcost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--count", type=int, default=20_000, help="records per mode")
    parser.add_argument(
        "--linger", type=float, default=PACK_LINGER, help="mode packed: seconds a packed row waits for more entries"
    )
    parser.add_argument(
        "--drain",
        choices=("faust", "batched"),
        default="faust",
        help="Faust's fetch loop, or streams.runtime.faust_drain's (one wait_first per fetched batch)",
    )
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return
    modes = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    from streams.localkafka import LocalKafka

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    kafka = None if external else LocalKafka(port=0, data_dir=Path(tempfile.mkdtemp(prefix="faustcost-kafka-")))
    if kafka is not None:
        kafka.start(timeout=120)
    try:
        bootstrap = external or kafka.bootstrap_servers  # type: ignore[union-attr]
        for mode in modes:
            got = measure(bootstrap, mode, args.count, args.linger, args.drain)
            rows = f" ({args.count / got['rows']:.1f} entries per packed row)" if got.get("rows") else ""
            if got.get("batches"):
                rows += f" ({args.count / got['batches']:.1f} events per batch)"
            print(f"{mode:7} {got['cpu_us']:7.1f} µs of worker CPU per event{rows}", flush=True)
    finally:
        if kafka is not None:
            kafka.stop()


if __name__ == "__main__":
    main()
