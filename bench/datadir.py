"""What a lost data directory costs at start-up (docs/operations.md, "Sizing").

    python -m bench.datadir [--users 20000] [--partitions 8]

Against the broker of KAFKA_BOOTSTRAP_SERVERS (a topic set of its own): each of
`--users` users makes a group call and a track, with no destination enabled (state only:
the users, seen and groups tables, as light on CPU as a worker gets). Once a worker has
processed them and stopped, the same worker is started twice more: with its data
directory kept, then with it deleted. Each time the seconds from the process start to
`/ready` answering 200 (tables recovered) are measured; the difference is the restore
of the changelogs into a new data directory. Results: bench/results/<stamp>-datadir.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import childproc
from streams.ops.producer import send_file
from streams.ops.webserve import free_port
from streams.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
OWN_PREFIXES = ("CS_RELAY_", "CLIENTSUCCESS_", "CSB_", "WEBHOOK_")


def traffic(path: Path, users: int) -> int:
    """A group call and a track per user (20 users a group); the number of messages."""
    with path.open("w") as out:
        for u in range(users):
            user, group = f"user-{u}", f"group-{u // 20}"
            out.write(
                json.dumps(
                    {
                        "type": "group",
                        "userId": user,
                        "groupId": group,
                        "messageId": f"g-{u}",
                        "traits": {"name": f"Group {u // 20}", "plan": "pro"},
                    }
                )
                + "\n"
            )
            out.write(
                json.dumps(
                    {
                        "type": "track",
                        "userId": user,
                        "event": "Report Built",
                        "messageId": f"t-{u}",
                        "properties": {"value": 1},
                    }
                )
                + "\n"
            )
    return 2 * users


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def get(url: str) -> tuple[int, Any]:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(url) as response:
                return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, None


async def until(probe, done, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {value!r:.300})")
        await asyncio.sleep(0.2)


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['CS_RELAY_WEB_PORT']}"
        self.process: subprocess.Popen | None = None

    async def start_until_ready(self, timeout: float = 600) -> float:
        """Seconds from the process start to /ready answering 200."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=childproc.dies_with_parent(),  # a bench killed outright takes its worker along
            )
        await until(lambda: get(self.url + "/ready"), lambda a: a[0] == 200, timeout, "the worker ready")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


async def changelog_records(settings: Settings, app_id: str) -> dict[str, int]:
    """Records in each changelog topic of the app (the sum of its partitions' end
    offsets; every changelog has CS_RELAY_TOPIC_PARTITIONS partitions)."""
    consumer = AIOKafkaConsumer(**settings.kafka_options(), group_id=None)
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(app_id) and t.endswith("-changelog"))
        out = {}
        for topic in topics:
            parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
            ends = await consumer.end_offsets(parts)
            out[topic.removeprefix(app_id + "-").removesuffix("-changelog")] = sum(ends.values())
        return out
    finally:
        await consumer.stop()


async def measure(users: int, partitions: int, work: Path) -> dict[str, Any]:
    name = f"datadir-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    env.update(
        CS_RELAY_APP_ID=name,
        CS_RELAY_INPUT_TOPIC=f"{name}-in",
        CS_RELAY_DLQ_TOPIC=f"{name}-dlq",
        CS_RELAY_TOPIC_PARTITIONS=str(partitions),
        CS_RELAY_INPUT_KEYED_BY_USER="true",
        CS_RELAY_DATA_DIR=str(work / "data"),
        CS_RELAY_WEB_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    settings = Settings.from_env(env)
    worker = Worker(env, work / "worker.log")
    messages = traffic(work / "traffic.jsonl", users)
    first = await worker.start_until_ready()
    try:
        await send_file(
            work / "traffic.jsonl",
            settings.kafka_bootstrap_servers,
            settings.input_topic,
            security=settings.kafka_security,
            out=io.StringIO(),
        )
        processing = time.monotonic()

        def drained(answer: tuple[int, Any]) -> bool:
            status, doc = answer
            return status == 200 and sum(doc["events_in"].values()) >= messages and not doc["consumer_lag"]["total"]

        await until(lambda: get(worker.url + "/status"), drained, 1800, "every message processed")
        processing = time.monotonic() - processing
    finally:
        worker.stop()
    data_dir = Path(env["CS_RELAY_DATA_DIR"])
    data_bytes = directory_bytes(data_dir)
    records = await changelog_records(settings, name)
    kept = await worker.start_until_ready()
    worker.stop()
    shutil.rmtree(data_dir)
    try:
        lost = await worker.start_until_ready()
    finally:
        worker.stop()
    restored = directory_bytes(data_dir)
    total = sum(records.values())
    return {
        "users": users,
        "messages": messages,
        "partitions": partitions,
        "destinations": "none enabled (state only)",
        "first_start_to_ready_s": round(first, 1),
        "processing_s": round(processing, 1),
        "data_dir_bytes": data_bytes,
        "data_dir_mb_per_100k_users": round(data_bytes / users * 100_000 / 1e6, 1),
        "changelog_records": records,
        "changelog_records_total": total,
        "restart_to_ready_s": {"data_dir_kept": round(kept, 1), "data_dir_lost": round(lost, 1)},
        "restore_s": round(lost - kept, 1),
        "restored_records_per_s": round(total / max(lost - kept, 0.1)),
        "restore_s_per_100k_users": round((lost - kept) / users * 100_000, 1),
        "data_dir_bytes_after_restore": restored,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.datadir", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cs-relay-datadir-") as work:
        result = asyncio.run(measure(args.users, args.partitions, Path(work)))
    doc = {
        "run": {
            "stamp": stamp,
            "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "datadir": result,
    }
    path = RESULTS / f"{stamp}-datadir.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
