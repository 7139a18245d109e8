"""`cs-relay dev`: the whole pipeline on one machine (local Kafka, mocks, workers).

Children run as separate processes with one shared environment, so the workers and the
mocks agree on credentials. `--workers N` starts N workers in one consumer group, each
with its own data dir (`var/dev/worker-{i}`), web port (6066+i) and log
(`var/dev/worker-{i}.log`). Ctrl-C (or SIGTERM) stops the workers first, then the
mocks, then Kafka. With `--demo` it sends the bundled sample traffic and prints what
each partner received, and where the console is (`devtools/demo_report.py`; without
CS_RELAY_ADMIN_TOKEN the workers get a development token); each demo run prefixes the
sample's messageIds with its own tag, so a second run is new traffic rather than duplicates of the first (Kafka and
the workers' state in var/dev/ carry over between runs).

Every port is checked before anything starts: one in use is one line naming it and the
option that moves it (`streams.ports`), exit 2. SIGHUP stops like Ctrl-C, and a second
Ctrl-C during the stop kills the children at once; killed outright, `dev` takes its
children along (`streams.childproc`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from devtools.demo_report import DEV_ADMIN_TOKEN, demo_report
from streams import childproc
from streams.destinations import REGISTRY
from streams.ports import Wanted, port_problem
from streams.testing.mocks import credentials_from_env, worker_partner_env

SAMPLE = Path(__file__).resolve().parent.parent / "streams" / "samples" / "segment-sample.jsonl"


def mock_urls(mock_ports: dict[str, int] | None = None) -> dict[str, str]:
    """Each registered destination's mock URL on this machine (its default port unless given)."""
    ports = {p.key: p.mock.port for p in REGISTRY} | dict(mock_ports or {})
    return {key: f"http://127.0.0.1:{port}" for key, port in ports.items()}


def dev_environment(bootstrap: str, mock_ports: dict[str, int] | None = None, data_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    env.update(worker_partner_env(mock_urls(mock_ports), credentials_from_env(env)))
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env.setdefault("CS_RELAY_DATA_DIR", str(data_dir or Path("var/dev/worker")))
    env.setdefault("CS_RELAY_TOPIC_PARTITIONS", "4")
    env.setdefault("CS_RELAY_ADMIN_TOKEN", DEV_ADMIN_TOKEN)  # the console is on (devtools/demo_report.py)
    return env


@dataclass(frozen=True)
class WorkerSpec:
    """What distinguishes one dev worker from the others."""

    index: int
    env: dict
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['CS_RELAY_WEB_PORT']}"


def worker_specs(env: dict, workers: int, var: Path) -> list[WorkerSpec]:
    """Worker i: data dir `{CS_RELAY_DATA_DIR}-{i}`, web port CS_RELAY_WEB_PORT + i
    (6066 by default) and log `var/worker-{i}.log`; the rest of `env` is shared."""
    data_dir = env["CS_RELAY_DATA_DIR"]
    base_port = int(env.get("CS_RELAY_WEB_PORT") or 6066)
    return [
        WorkerSpec(
            i,
            {**env, "CS_RELAY_DATA_DIR": f"{data_dir}-{i}", "CS_RELAY_WEB_PORT": str(base_port + i)},
            var / f"worker-{i}.log",
        )
        for i in range(workers)
    ]


async def wait_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Until `url` answers below 500; fails early when `process` (the server) has exited."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if process is not None and process.poll() is not None:
                raise ChildProcessError(f"exited with {process.returncode} before {url} answered")
            try:
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
            await asyncio.sleep(0.2)


def shares_every_partition(answers: list[tuple[int, dict | None]], topic: str, partitions: int) -> bool:
    """Whether every worker's /ready said 200 and together they own each partition of
    `topic` once (a group that has finished forming)."""
    if not answers or any(status != 200 or not body for status, body in answers):
        return False
    owned = sorted(p for _, body in answers for p in (body or {}).get("partitions", {}).get(topic, []))
    return owned == list(range(partitions))


async def wait_group_ready(
    workers: list[tuple[WorkerSpec, subprocess.Popen]], topic: str, partitions: int, timeout: float
) -> None:
    """Until the workers have formed their group (`shares_every_partition`), so demo
    traffic is not caught in the rebalances of workers joining one after another.
    Fails early when a worker has exited."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            answers = []
            for spec, process in workers:
                if process.poll() is not None:
                    raise ChildProcessError(f"worker {spec.index} exited with {process.returncode}")
                try:
                    async with session.get(spec.url + "/ready") as response:
                        answers.append((response.status, await response.json()))
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    answers.append((0, None))
            if shares_every_partition(answers, topic, partitions):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the workers did not share the {partitions} partitions of {topic} within {timeout:.0f}s"
                )
            await asyncio.sleep(0.3)


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a terminal's Ctrl-C reaches `dev` alone, which stops them in order
        preexec_fn=childproc.dies_with_parent(),  # and `dev` killed outright takes them along
    )


WORKER_STOP_MARGIN = 10.0  # seconds past CS_RELAY_SHUTDOWN_TIMEOUT before a worker is killed
MOCKS_STOP_TIMEOUT = 5.0


def demo_run_tag(now: float | None = None) -> str:
    """The messageId prefix of one demo run ("demo-20261129T150918Z"): the sample's
    messageIds are fixed, and var/dev keeps the worker's dedupe state between runs, so
    without it a second `make run` would show its traffic dropped as duplicates."""
    return "demo-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def planned_ports(
    specs: list[WorkerSpec], web_host: str, mock_ports: dict[str, int] | None, kafka_port: int | None
) -> list[Wanted]:
    """Every port `dev` will listen on, with what changes it (`streams.ports`): Kafka's
    (None: an existing broker), each mock's, and each worker's web port."""
    ports = {key: int(url.rsplit(":", 1)[1]) for key, url in mock_urls(mock_ports).items()}
    wanted = [Wanted(kafka_port, "127.0.0.1", "Kafka", "--kafka-port")] if kafka_port is not None else []
    wanted += [Wanted(ports[p.key], "127.0.0.1", f"the {p.name} mock", f"--{p.mock.option}-port") for p in REGISTRY]
    for spec in specs:
        change = "CS_RELAY_WEB_PORT" + (f" (worker {spec.index} listens on it + {spec.index})" if spec.index else "")
        wanted.append(Wanted(int(spec.env["CS_RELAY_WEB_PORT"]), web_host, f"worker {spec.index}'s web server", change))
    return wanted


def run_dev(
    *, demo: bool, exit_after: bool, kafka_port: int = 9092, workers: int = 1, mock_ports: dict[str, int] | None = None
) -> int:
    from streams.localkafka import KafkaLaunchError, LocalKafka
    from streams.settings import Settings

    var = Path("var/dev")
    kafka = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    # Before anything starts or waits: the workers' settings (a bad variable is one line
    # naming it) and every port (one taken is one line naming it and its option).
    planned = dev_environment(bootstrap or f"127.0.0.1:{kafka_port or 9092}", mock_ports)
    settings = Settings.from_env(planned)
    problem = port_problem(
        planned_ports(
            worker_specs(planned, workers, var), settings.web_host, mock_ports, None if bootstrap else kafka_port
        )
    )
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    children = childproc.Children()
    mocks: list[subprocess.Popen] = []
    running: list[tuple[WorkerSpec, subprocess.Popen]] = []
    try:
        if not bootstrap:
            kafka = LocalKafka(port=kafka_port, data_dir=var / "kafka")
            try:
                kafka.start()
            except KafkaLaunchError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            children.pids += [kafka.pid] if kafka.pid else []
            bootstrap = kafka.bootstrap_servers
            print(f"kafka     ready at {bootstrap} (started in {kafka.started_in:.1f}s)")
        env = dev_environment(bootstrap, mock_ports)
        urls = mock_urls(mock_ports)
        specs = worker_specs(env, workers, var)
        partitions = int(env["CS_RELAY_TOPIC_PARTITIONS"])
        if workers > partitions:
            print(
                f"note: {workers} workers share {partitions} partitions (CS_RELAY_TOPIC_PARTITIONS): "
                f"{workers - partitions} will stand by"
            )
        port_args = [arg for p in REGISTRY for arg in (f"--{p.mock.option}-port", urls[p.key].rsplit(":", 1)[1])]
        mocks.append(children.add(_spawn(["mocks", *port_args], env, var / "mocks.log")))
        for url in urls.values():
            try:
                asyncio.run(wait_http(url + "/_mock/requests", 30, mocks[0]))
            except (ChildProcessError, TimeoutError) as exc:
                print(f"error: the mocks {exc}; see {var / 'mocks.log'}", file=sys.stderr)
                return 1
        print("mocks     " + ", ".join(f"{p.name} {urls[p.key]}" for p in REGISTRY))
        for spec in specs:
            running.append((spec, children.add(_spawn(["worker"], spec.env, spec.log))))
        for spec, worker in running:
            try:
                asyncio.run(wait_http(spec.url + "/", 90, worker))
            except (ChildProcessError, TimeoutError) as exc:
                print(f"error: worker {spec.index} {exc}; see {spec.log}", file=sys.stderr)
                return 1
            print(f"worker {spec.index} running at {spec.url} (data: {spec.env['CS_RELAY_DATA_DIR']}, log: {spec.log})")
        if demo:
            from streams.ops.producer import send_file
            from streams.runtime.topics import by_user_topic_name
            from streams.settings import Settings

            settings = Settings.from_env(env)  # what the workers read, defaults included
            try:
                asyncio.run(wait_group_ready(running, by_user_topic_name(settings.app_id), partitions, 120))
            except (ChildProcessError, TimeoutError) as exc:
                print(f"error: {exc}; see {var}/worker-*.log", file=sys.stderr)
                return 1

            asyncio.run(
                send_file(
                    SAMPLE,
                    bootstrap,
                    settings.input_topic,
                    message_id_tag=demo_run_tag(),
                    security=settings.kafka_security,
                )
            )
            print("waiting for deliveries to settle ...")
            print(asyncio.run(demo_report(urls, [spec.url for spec in specs], env, SAMPLE)))
            if exit_after:
                return 0
        print("running; Ctrl-C stops the workers, the mocks and Kafka")
        while True:
            for spec, worker in running:
                if worker.poll() is not None:
                    print(
                        f"error: worker {spec.index} exited with {worker.returncode}; see {spec.log}", file=sys.stderr
                    )
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP (`childproc.Children`)
        return 0
    finally:
        children.stopping = True
        try:
            # A worker ends within its shutdown timeout + 10 s (streams.runtime.stopping).
            childproc.stop([worker for _, worker in running], settings.shutdown_timeout + WORKER_STOP_MARGIN)
            childproc.stop(mocks, MOCKS_STOP_TIMEOUT)
            if kafka is not None:
                kafka.stop()
        finally:
            children.restore()
        print("stopped")
