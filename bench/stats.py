"""The benchmark's arithmetic, as pure functions: what the partners received becomes
throughput, latency and per-second series; /proc and a data dir become memory and
state figures."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.mix import us_from_iso

US = 1_000_000


@dataclass(frozen=True)
class Receipt:
    """One request a mock partner answered: which event it carried (the event's
    produce time, in unix µs, from the body's `timestamp`) and when it arrived."""

    partner: str
    event_us: int
    received_us: int
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency_ms(self) -> float:
        return (self.received_us - self.event_us) / 1000


def receipt(partner: str, record: Mapping[str, Any]) -> Receipt | None:
    """A mock's recorded request (`GET /_mock/requests` item) as a `Receipt`; None for a
    request without a body timestamp (not one of the benchmark's)."""
    body = record.get("json")
    stamp = body.get("timestamp") if isinstance(body, dict) else None
    if not isinstance(stamp, str):
        return None
    return Receipt(partner, us_from_iso(stamp), us_from_iso(record["received_at"]), int(record["status"]))


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0-100) with linear interpolation between closest ranks
    (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    if not 0 <= p <= 100:
        raise ValueError("p must be between 0 and 100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p90, p99 and max of `values`, rounded for a report."""
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values), 1) if values else math.nan,
    }


def completions(receipts: Iterable[Receipt]) -> dict[int, int]:
    """Event (produce µs) -> when its last successful request arrived (µs): an event is
    delivered once every partner that takes it has it."""
    done: dict[int, int] = {}
    for r in receipts:
        if r.ok and r.received_us > done.get(r.event_us, 0):
            done[r.event_us] = r.received_us
    return done


def rate(count: int, start_us: int, end_us: int) -> float:
    """Items per second over [start, end]; 0 when the window is empty."""
    seconds = (end_us - start_us) / US
    return count / seconds if seconds > 0 else 0.0


def per_second(times_us: Iterable[int], start_us: int, seconds: int | None = None) -> list[int]:
    """How many of `times_us` fall in each whole second from `start_us` (times before
    the start are left out; `seconds` fixes the length of the series)."""
    return per_interval(times_us, start_us, US, seconds)


def per_interval(times_us: Iterable[int], start_us: int, interval_us: int, count: int | None = None) -> list[int]:
    """How many of `times_us` fall in each `interval_us` from `start_us` (times before
    the start are left out; `count` fixes the length of the series)."""
    bins: list[int] = [0] * (count or 0)
    for t in times_us:
        if t < start_us:
            continue
        index = (t - start_us) // interval_us
        if count is not None and index >= count:
            continue
        if index >= len(bins):
            bins.extend([0] * (index + 1 - len(bins)))
        bins[index] += 1
    return bins


def cdf_points(values: Sequence[float], points: int = 101) -> list[tuple[float, float]]:
    """(percentile, value) at `points` evenly spaced percentiles: a compact CDF for the
    results file."""
    if not values:
        return []
    return [(100 * i / (points - 1), percentile(values, 100 * i / (points - 1))) for i in range(points)]


def ratio(measured: float, ceiling: float) -> float:
    """`measured` as a share of `ceiling` (0.42 is 42 %); NaN without a ceiling."""
    return measured / ceiling if ceiling > 0 else math.nan


def per_100k_users(total: float, users: int) -> float:
    """`total` (of `users` users) scaled to 100,000 users."""
    if users <= 0:
        raise ValueError("users must be positive")
    return total * 100_000 / users


def proc_status_kb(text: str) -> dict[str, int]:
    """The `kB` fields of a /proc/<pid>/status text (VmHWM, VmRSS, ...) as numbers."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    return fields


def is_table_data(file_name: str) -> bool:
    """Whether a file of a RocksDB folder holds table data (SST files, the write-ahead
    log, the manifest) rather than RocksDB's own info logs, options and lock, which
    are about the same size for an empty store and grow with every restart."""
    if file_name.endswith((".sst", ".blob")) or file_name.startswith(("MANIFEST-", "CURRENT", "IDENTITY")):
        return True
    stem, _, suffix = file_name.partition(".")
    return suffix == "log" and stem.isdigit()  # NNNNNN.log is the WAL; LOG and LOG.old.* are info logs


def proc_stat_cpu_seconds(text: str, ticks_per_second: int) -> float:
    """User plus system CPU time of a process, from its /proc/<pid>/stat text."""
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def machine_busy_seconds(text: str, ticks_per_second: int) -> float:
    """CPU seconds the machine's cores spent busy (all but idle and waiting on the disk),
    from /proc/stat's text: its first line adds up every core."""
    fields = [int(v) for v in text.split("\n", 1)[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / ticks_per_second


def thread_kind(main: bool, name: str) -> str:
    """A worker thread's kind for the CPU split: "main" (the event loop), "rocksdb"
    (RocksDB's flushes and compactions, threads it names "rocksdb:..."), or "other"
    (Faust's consumer thread and executors: Python threads are all named "python")."""
    return "main" if main else "rocksdb" if name.startswith("rocksdb") else "other"


def cores_by_kind(samples: Sequence[tuple[int, Mapping[str, float]]], start_us: int, end_us: int) -> dict[str, float]:
    """`cpu_cores` for each kind of thread in (time µs, CPU seconds by kind) samples."""
    kinds = sorted({kind for _, by_kind in samples for kind in by_kind})
    return {
        kind: cpu_cores([(t, by_kind.get(kind, 0.0)) for t, by_kind in samples], start_us, end_us) for kind in kinds
    }


def cpu_cores(samples: Sequence[tuple[int, float]], start_us: int, end_us: int) -> float:
    """Cores a process used on average between `start_us` and `end_us`, from
    (time µs, CPU seconds) samples: the samples nearest inside the window."""
    inside = [s for s in samples if start_us <= s[0] <= end_us]
    if len(inside) < 2 or inside[-1][0] == inside[0][0]:
        return math.nan
    return (inside[-1][1] - inside[0][1]) / ((inside[-1][0] - inside[0][0]) / US)


def machine_cores(
    samples: Sequence[tuple[int, float, float, float]], start_us: int, end_us: int, cores: int
) -> dict[str, float]:
    """What a drain's workers shared the machine's `cores` with, from (time µs, the
    machine's busy CPU seconds, the bench process's, the workers') samples taken together
    (`harness.sample_machine`): `busy` cores in all (steal included: time the host gave
    this VM's cores to others), the `workers`', the `bench` process's (the mocks, the
    driver) and the `rest` (the broker, anything else running, and steal). `span_s`: the
    seconds of the window the samples cover (short if a worker ended, and the sampler
    with it)."""
    busy, bench, workers = (cpu_cores([(s[0], s[i]) for s in samples], start_us, end_us) for i in (1, 2, 3))
    inside = [s[0] for s in samples if start_us <= s[0] <= end_us]
    span = (inside[-1] - inside[0]) / US if inside else 0.0
    figures = {"cores": cores, "busy": busy, "workers": workers, "bench": bench, "rest": busy - workers - bench}
    return {key: round(value, 2) for key, value in figures.items()} | {"span_s": round(span, 1)}


def machine_timeline(
    samples: Sequence[tuple[int, float, float, float]], start_us: int, end_us: int
) -> list[list[float]]:
    """`machine_cores`'s figures between each two consecutive samples inside the window,
    as [seconds from `start_us` at the interval's end, busy cores, the workers', the
    bench process's]: whether a drain's slow stretch was a busy or an idle worker."""
    inside = [s for s in samples if start_us <= s[0] <= end_us]
    timeline = []
    for before, after in itertools.pairwise(inside):
        seconds = (after[0] - before[0]) / US
        if seconds > 0:
            cores = [(after[i] - before[i]) / seconds for i in (1, 3, 2)]
            timeline.append([round((after[0] - start_us) / US, 2), *(round(c, 2) for c in cores)])
    return timeline


def machine_speed(samples: Sequence[tuple[int, int]], start_us: int, end_us: int, fastest_us: int) -> float:
    """How fast the cores ran between `start_us` and `end_us`: the median of the speed
    probe's samples (time µs, CPU µs of its fixed work; `bench.speedprobe`) there, as
    `fastest_us` (the fastest the probe ran) over each; nan without samples."""
    inside = [fastest_us / cpu for at, cpu in samples if start_us <= at <= end_us and cpu > 0]
    return round(statistics.median(inside), 2) if inside else math.nan


def probe_figures(samples: Sequence[tuple[int, int]], start_us: int, end_us: int, fastest_us: int) -> dict[str, Any]:
    """The speed probe's figures that `machine_speed` comes from: the median CPU µs of
    its samples in the window, how many, and the fastest it was held against (so that a
    drain's speed can be set against another reference later; fastest/median is the
    median speed only for an odd count)."""
    inside = [cpu for at, cpu in samples if start_us <= at <= end_us and cpu > 0]
    median = round(statistics.median(inside)) if inside else None
    return {"median": median, "samples": len(inside), "fastest": fastest_us}


def speed_figures(samples: Sequence[tuple[int, int]], start_us: int, end_us: int, fastest_us: int) -> dict[str, Any]:
    """A window's `machine_speed` and the probe's figures it comes from
    (`speed_probe_us`), as a drain or a phase of scenario a reports them."""
    return {
        "machine_speed": machine_speed(samples, start_us, end_us, fastest_us),
        "speed_probe_us": probe_figures(samples, start_us, end_us, fastest_us),
    }


def table_of(relative_path: str) -> str:
    """The Faust table a file in the worker's data dir belongs to (its RocksDB folder is
    `<table>-<partition>.db`), else the file's top folder: for a size breakdown."""
    parts = relative_path.split("/")
    for part in parts:
        if part.endswith(".db"):
            name = part[: -len(".db")]
            head, _, partition = name.rpartition("-")
            return head if head and partition.isdigit() else name
    return parts[0] if len(parts) > 1 else "(files)"


def memory_by_users(samples: Sequence[tuple[int, int, int]], per_event: int, points: int = 25) -> list[list[float]]:
    """The worker's memory as the drain went: `samples` of (partner requests delivered,
    RSS kB, anonymous kB), read every few seconds, as [users delivered, RSS MB,
    anonymous MB] (a user's track takes `per_event` requests), at most `points` of them
    evenly spread over the users (the last sample always kept)."""
    if per_event <= 0:
        raise ValueError("per_event must be positive")
    curve = [[requests // per_event, round(rss / 1024, 1), round(anon / 1024, 1)] for requests, rss, anon in samples]
    if len(curve) <= points:
        return curve
    step = max(1.0, curve[-1][0] / (points - 1))
    kept, next_at = [], 0.0
    for point in curve[:-1]:
        if point[0] >= next_at:
            kept.append(point)
            next_at = point[0] + step
    return [*kept, curve[-1]]


def growth_per_100k_users(curve: Sequence[Sequence[float]]) -> float:
    """RSS MB added per 100,000 more users over the second half of `curve`
    (`memory_by_users`): from the first point at half the last point's users to the
    last (the first half is the caches filling); NaN with too few users."""
    if not curve or curve[-1][0] <= 0:
        return math.nan
    last = curve[-1]
    mid = next(p for p in curve if p[0] >= last[0] / 2)
    if last[0] == mid[0]:
        return math.nan
    return (last[1] - mid[1]) / (last[0] - mid[0]) * 100_000
