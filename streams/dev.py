"""`cs-relay dev`: the whole pipeline on one machine (local Kafka, mocks, a worker).

Children run as separate processes with one shared environment, so the worker and the
mocks agree on credentials. Ctrl-C (or SIGTERM) stops the worker first, then the mocks,
then Kafka. With `--demo` it sends the bundled sample traffic and prints what each
mock partner received.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

SAMPLE = Path(__file__).resolve().parent / "samples" / "segment-sample.jsonl"
DEMO_CREDENTIALS = {
    "CLIENTSUCCESS_SOURCE_ID": "demo-source",
    "CLIENTSUCCESS_API_KEY": "demo-cs-api-key",
    "CSB_API_KEY": "demo-csb-api-key",
}


def dev_environment(bootstrap: str, cs_port: int = 8081, csb_port: int = 8082, data_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    for name, value in DEMO_CREDENTIALS.items():
        if not env.get(name):
            env[name] = value
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["CLIENTSUCCESS_BASE_URL"] = f"http://127.0.0.1:{cs_port}"
    env["CSB_BASE_URL"] = f"http://127.0.0.1:{csb_port}"
    env.setdefault("CS_RELAY_DATA_DIR", str(data_dir or Path("var/dev/worker")))
    env.setdefault("CS_RELAY_TOPIC_PARTITIONS", "4")
    return env


async def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
            await asyncio.sleep(0.2)


async def settled_requests(url: str, *, quiet_for: float = 3.0, timeout: float = 90.0) -> list:
    """The mock's recorded requests once no new one has arrived for `quiet_for` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url + "/_mock/requests") as response:
                requests = await response.json()
            if len(requests) != last:
                last, since = len(requests), time.monotonic()
            elif len(requests) and time.monotonic() - since >= quiet_for:
                return requests
            if time.monotonic() > deadline:
                return requests
            await asyncio.sleep(0.5)


async def demo_summary(env: dict) -> str:
    cs, csb = env["CLIENTSUCCESS_BASE_URL"], env["CSB_BASE_URL"]
    lines = []
    for name, url in (("ClientSuccess", cs), ("CustomerSuccessBox", csb)):
        requests = await settled_requests(url)
        ok = sum(1 for r in requests if 200 <= r["status"] < 300)
        lines.append(f"\n== {name} received {len(requests)} requests ({ok} accepted) ==")
        for r in requests[:40]:
            body = json.dumps(r.get("json"), separators=(",", ":"))
            lines.append(f"  {r['status']} {r['method']} {r['path']}  {body[:140]}")
        if len(requests) > 40:
            lines.append(f"  ... and {len(requests) - 40} more")
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/_mock/state") as response:
                state = await response.json()
        lines.append(f"  partner view: {json.dumps(state)[:600]}")
    return "\n".join(lines)


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args], env=env, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_dev(*, demo: bool, exit_after: bool, kafka_port: int = 9092) -> int:
    from streams.kafka_local import KafkaLaunchError, LocalKafka

    var = Path("var/dev")
    kafka = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if not bootstrap:
        kafka = LocalKafka(port=kafka_port, data_dir=var / "kafka")
        try:
            kafka.start()
        except KafkaLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        bootstrap = kafka.bootstrap_servers
        print(f"kafka     ready at {bootstrap} (started in {kafka.started_in:.1f}s)")
    env = dev_environment(bootstrap)
    children: list[subprocess.Popen] = []
    stop = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        children.append(_spawn(["mocks"], env, var / "mocks.log"))
        asyncio.run(wait_http(env["CLIENTSUCCESS_BASE_URL"] + "/_mock/requests", 30))
        asyncio.run(wait_http(env["CSB_BASE_URL"] + "/_mock/requests", 30))
        print(f"mocks     ClientSuccess {env['CLIENTSUCCESS_BASE_URL']}, CustomerSuccessBox {env['CSB_BASE_URL']}")
        worker = _spawn(["worker"], env, var / "worker.log")
        children.append(worker)
        asyncio.run(wait_http(f"http://127.0.0.1:{env.get('CS_RELAY_WEB_PORT', '6066')}/", 90))
        print(f"worker    running (log: {var / 'worker.log'})")
        if demo:
            from streams.producer import send_file

            asyncio.run(send_file(SAMPLE, bootstrap, env.get("CS_RELAY_INPUT_TOPIC", "segment-events")))
            print("waiting for deliveries to settle ...")
            print(asyncio.run(demo_summary(env)))
            if exit_after:
                return 0
        print("running; Ctrl-C stops the worker, the mocks and Kafka")
        while not stop:
            if worker.poll() is not None:
                print(f"error: the worker exited with {worker.returncode}; see {var / 'worker.log'}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            _stop(child)
        if kafka is not None:
            kafka.stop()
        print("stopped")
