"""The bench's harness, shared by every scenario (`scenario_a`, `suite`): the worker
process it starts and measures (`Worker`), its environment, what the partner mocks
received (`Receipts`) and resetting them, the calls of a phase (`Phase`), and the size of a data dir."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import mix, stats
from streams import childproc, kafkaconn
from streams.ops.dlq import read_dead_letters
from streams.ops.webserve import free_port
from streams.settings import Settings
from streams.testing.mocks import MockServers, worker_partner_env
from streams.testing.recorder import FAULTS_KEY, RECORDS_KEY, STATE_KEY

REPO = Path(__file__).resolve().parent.parent
CLIENTSUCCESS, CSB = "clientsuccess", "customersuccessbox"
# The destinations the benchmark's scenarios are about (others in the registry are not
# enabled in its worker), and which of them each call type reaches.
MEASURED = (CLIENTSUCCESS, CSB)
PARTNERS_OF = {"identify": (CSB,), "group": (CSB,), "track": (CLIENTSUCCESS, CSB), "page": (CLIENTSUCCESS, CSB)}
DEFAULT_MAX_IN_FLIGHT = Settings().max_in_flight
READY_LINE = "[^Worker]: Ready"  # Faust's log line once every service of the worker runs


@dataclass
class Worker:
    """One `python -m streams.cli worker` process, its output in `log`."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, env: dict[str, str], log: Path, command: Sequence[str] | None = None) -> Worker:
        """Start `command` (a cs-relay worker unless given: the naive relay's, say)."""
        command = list(command or [sys.executable, "-m", "streams.cli", "worker"])
        with log.open("wb") as out:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=childproc.dies_with_parent(),  # a bench killed outright takes its workers along
            )
        return cls(process, log)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the worker exited with {self.process.returncode}; the end of {self.log}:\n{tail}")

    async def until_logged(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not log {text!r} within {timeout:.0f} s; see {self.log}")
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        text = Path(f"/proc/{self.process.pid}/stat").read_text()
        return stats.proc_stat_cpu_seconds(text, os.sysconf("SC_CLK_TCK"))

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU seconds of the process's live threads, by `stats.thread_kind`."""
        pid, tick = self.process.pid, os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                seconds = stats.proc_stat_cpu_seconds((task / "stat").read_text(), tick)
                kind = stats.thread_kind(task.name == str(pid), (task / "comm").read_text().strip())
            except OSError:  # it ended meanwhile
                continue
            out[kind] = out.get(kind, 0.0) + seconds
        return out

    async def sample_cpu(
        self,
        samples: list[tuple[int, float]],
        every: float = 0.5,
        threads: list[tuple[int, dict[str, float]]] | None = None,
    ) -> None:
        """Append (time µs, CPU seconds) every `every` seconds while the process runs,
        and to `threads`, if given, (time µs, CPU seconds by kind of thread)."""
        while self.process.poll() is None:
            try:
                now, total = time.time_ns() // 1000, self.cpu_seconds()
                samples.append((now, total))
                if threads is not None:
                    by_kind = self.thread_cpu_seconds()
                    # the process's total keeps the CPU of threads that have ended
                    by_kind["exited"] = total - sum(by_kind.values())
                    threads.append((now, by_kind))
            except OSError:
                return
            await asyncio.sleep(every)

    def memory_kb(self) -> dict[str, int]:
        return stats.proc_status_kb(Path(f"/proc/{self.process.pid}/status").read_text())

    async def sample_memory(
        self, samples: list[tuple[int, int, int]], delivered: Callable[[], int], every: float = 5.0
    ) -> None:
        """Append (`delivered()`, RSS kB, anonymous kB) every `every` seconds while the
        process runs (`stats.memory_by_users` makes them a curve)."""
        while self.process.poll() is None and self.memory_sample(samples, delivered):
            await asyncio.sleep(every)

    def memory_sample(self, samples: list[tuple[int, int, int]], delivered: Callable[[], int]) -> bool:
        """Append one sample of `sample_memory`; False once the process is gone."""
        try:
            rollup = stats.proc_status_kb(Path(f"/proc/{self.process.pid}/smaps_rollup").read_text())
        except OSError:
            return False
        samples.append((delivered(), rollup.get("Rss", 0), rollup.get("Anonymous", 0)))
        return True

    async def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, a graceful stop (the loop keeps serving the mocks meanwhile: the
        worker may finish deliveries), then SIGKILL if it takes longer than `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 30)


async def until_cpu_quiet(samples: list[tuple[int, float]], cores: float = 0.1, timeout: float = 30.0) -> None:
    """Until the worker used less than `cores` over the last second of CPU samples (or
    `timeout` seconds passed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recent = [s for s in samples if s[0] >= samples[-1][0] - stats.US] if samples else []
        if len(recent) >= 2 and stats.cpu_cores(recent, recent[0][0], recent[-1][0]) < cores:
            return
        await asyncio.sleep(0.25)


async def sample_machine(
    samples: list[tuple[int, float, float, float]], workers: Callable[[], float], every: float = 0.5
) -> None:
    """Append (time µs, the machine's busy CPU seconds, this process's CPU seconds, the
    `workers`' CPU seconds) every `every` seconds until cancelled or a worker ends, all
    read at the same moment: what the workers share the cores with (`stats.machine_cores`)."""
    tick = os.sysconf("SC_CLK_TCK")
    while True:
        try:
            on_workers = workers()
        except OSError:  # a worker ended
            return
        busy = stats.machine_busy_seconds(Path("/proc/stat").read_text(), tick)
        samples.append((time.time_ns() // 1000, busy, time.process_time(), on_workers))
        await asyncio.sleep(every)


async def probe_speed(samples: list[tuple[int, int]]) -> None:
    """Append (time µs, CPU µs of the probe's fixed work) from `python -m bench.speedprobe`
    (its first: the fastest of its calibration) until cancelled; the probe is then stopped."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.speedprobe",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        # Its own session: a Ctrl-C at the terminal is the bench's to handle (the probe
        # would end and seem to have failed); a bench killed outright takes it along.
        start_new_session=True,
        preexec_fn=childproc.dies_with_parent(),
    )
    assert probe.stdout is not None
    try:
        async for line in probe.stdout:
            try:
                at, cpu = (int(field) for field in line.split())
            except ValueError:
                cpu = 0
            if cpu <= 0:
                print(f"  speed probe: a line it should not write, left out: {line[:80]!r}", flush=True)
                continue
            samples.append((at, cpu))
        code = await probe.wait()
        print(f"  speed probe: ended (exit code {code}) before the drain; the speed covers its samples", flush=True)
    finally:
        if probe.returncode is None:
            probe.kill()
        await asyncio.shield(probe.wait())


def worker_env(settings: Settings, mocks: MockServers) -> dict[str, str]:
    """The environment of the run's worker: the caller's, with the run's topics, data
    dir and mocks (other CS_RELAY_* tuning passes through)."""
    env = {k: v for k, v in os.environ.items() if k not in kafkaconn.VARIABLES}
    env.update(settings.kafka_security.env())
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        CS_RELAY_APP_ID=settings.app_id,
        CS_RELAY_INPUT_TOPIC=settings.input_topic,
        CS_RELAY_DLQ_TOPIC=settings.dlq_topic,
        CS_RELAY_TOPIC_PARTITIONS=str(settings.topic_partitions),
        # The bench produces its input keyed by user (as `cs-relay send` does).
        CS_RELAY_INPUT_KEYED_BY_USER=str(settings.input_keyed_by_user).lower(),
        CS_RELAY_DATA_DIR=str(settings.data_dir),
        CS_RELAY_WEB_PORT=str(free_port()),
        CS_RELAY_LOG_LEVEL="info",  # the bench waits for Faust's "Ready" line
        PYTHONUNBUFFERED="1",
    )
    env.update(worker_partner_env({key: mocks.urls[key] for key in MEASURED}, mocks.credentials))
    return env


# ------------------------------------------------------------------ what the partners received


class Receipts:
    """Collects, as they come, the benchmark's requests the mocks recorded (the same
    records `GET /_mock/requests` serves, read in-process: polling over HTTP would
    serialise the whole list every time)."""

    def __init__(self, mocks: MockServers) -> None:
        self._records = {key: mocks.apps[key][RECORDS_KEY] for key in MEASURED}
        self._read = {partner: 0 for partner in self._records}
        self.all: list[stats.Receipt] = []
        self.delivered: set[tuple[str, int]] = set()  # (partner, event) answered 2xx

    def collect(self) -> list[tuple[str, int]]:
        """Read what the mocks recorded since the last call; return the (partner, event)
        pairs answered 2xx for the first time (a redelivery is not fresh)."""
        fresh: list[tuple[str, int]] = []
        for partner, records in self._records.items():
            new = records[self._read[partner] :]
            self._read[partner] += len(new)
            for record in new:
                r = stats.receipt(partner, record)
                if r is not None:
                    self.all.append(r)
                    key = (partner, r.event_us)
                    if r.ok and key not in self.delivered:
                        self.delivered.add(key)
                        fresh.append(key)
        return fresh

    def records(self, partner: str) -> list[dict[str, Any]]:
        return list(self._records[partner])


@dataclass
class Phase:
    """The calls of one phase and when each was produced (its event id)."""

    name: str
    calls: list[mix.Call]
    produced_us: list[int] = field(default_factory=list)

    def expected(self) -> set[tuple[str, int]]:
        return {(p, us) for call, us in zip(self.calls, self.produced_us, strict=False) for p in PARTNERS_OF[call.type]}


class TrimmedReceipts(Receipts):
    """Receipts that drop the mocks' records once read (scenario f: a million users'
    requests would otherwise stay in the mocks' memory)."""

    def collect(self) -> list[tuple[str, int]]:
        fresh = super().collect()
        for partner, records in self._records.items():
            del records[: self._read[partner]]
            self._read[partner] = 0
        return fresh


def reset_mocks(mocks: MockServers) -> None:
    """Forget recorded requests, the partners' state and any fault."""
    for key in MEASURED:
        mocks.apps[key][RECORDS_KEY].clear()
        mocks.apps[key][STATE_KEY].clear()
        mocks.apps[key][FAULTS_KEY].clear()


def add_latency(mocks: MockServers, latency_ms: float) -> None:
    for key in MEASURED:
        mocks.apps[key][FAULTS_KEY].add({"latency_ms": latency_ms})


def shown(path: Path) -> str:
    """A path for the results file: relative to the checkout when inside it."""
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def disk_usage(root: Path) -> dict[str, Any]:
    """Bytes of the worker's data dir: table data per table, and RocksDB's overhead."""
    data: dict[str, int] = {}
    overhead = 0
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        if stats.is_table_data(path.name):
            table = stats.table_of(path.relative_to(root).as_posix())
            data[table] = data.get(table, 0) + size
        else:
            overhead += size
    return {"data": sum(data.values()), "by_table": dict(sorted(data.items())), "overhead": overhead}


async def count_dead_letters(settings: Settings) -> int:
    return sum([1 async for _ in read_dead_letters(settings)])


def merged_usage(dirs: Sequence[Path]) -> dict[str, Any]:
    usages = [disk_usage(d) for d in dirs if d.exists()]
    by_table: dict[str, int] = {}
    for usage in usages:
        for table, size in usage["by_table"].items():
            by_table[table] = by_table.get(table, 0) + size
    return {
        "data": sum(u["data"] for u in usages),
        "by_table": dict(sorted(by_table.items())),
        "overhead": sum(u["overhead"] for u in usages),
    }
