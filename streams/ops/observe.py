"""What a worker has done, for `GET /metrics` (Prometheus) and `GET /status` (JSON).

Three sources, all read at scrape time by `streams.ops.admin`:

* the runtime's `counters` (`streams.runtime.runtime.Runtime`: `in.track`,
  `held.clientsuccess`, `skipped.<dest>`, `duplicates`, ...), turned into metric
  families by `metric_families()` so the runtime only keeps counting as it does;
* the `Stats` of the worker's observer (`streams.ops.observer.OpsObserver`), fed
  with every partner request's round trip (`PartnerClient.on_attempt`: destination,
  HTTP status, seconds, outcome) and every dead letter the runtime reports (with its
  stage, reason and destination);
* a `Snapshot` of gauges the admin module reads from Faust: events waiting per
  destination (the `pending` table: held, releasing, and parked for a later retry),
  the age of each destination's oldest parked delivery (kept up to date by the
  runtime as it writes pending records: `streams.runtime.parking.OldestParked`),
  consumer lag per partition, readiness.

`metric_families(snapshot)` and `status_document(snapshot)` are pure. `worker_registry`
is the worker's own CollectorRegistry (never prometheus_client's global one): the
snapshot's families, `cs_relay_build_info{version}`, and the process, platform and GC
collectors of prometheus_client; `render_metrics(snapshot)` renders one snapshot
through such a registry. Counts are this worker process's since it started (each
worker is scraped on its own). Names carry their unit: `_seconds`, `_bytes`,
`_records`, `_total` for counters.
"""

from __future__ import annotations

import bisect
import platform
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

import streams
from streams import eventloop
from streams.core.breaker import GAUGE

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NO_STATUS = "error"  # a timeout or transport error: no HTTP answer
DONE, RETRY, FAIL = "done", "retry", "fail"  # streams.runtime.delivery.Outcome values


def status_label(status: int | None) -> str:
    return NO_STATUS if status is None else str(status)


@dataclass
class Latency:
    """One destination's request latency histogram (per-bucket counts, not cumulative)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


@dataclass
class Stats:
    """Partner requests and dead letters, as the hooks report them."""

    responses: Counter = field(default_factory=Counter)  # (destination, status, outcome)
    latency: dict[str, Latency] = field(default_factory=dict)
    dead_letters: Counter = field(default_factory=Counter)  # (stage, reason, destination)

    def attempt(self, destination: str, status: int | None, seconds: float, outcome: Any, attempt: int = 1) -> None:
        """One request's round trip and what its answer means (`classify`): done,
        retry (408, 429, 5xx, no answer: tried again, now or parked) or fail."""
        outcome = getattr(outcome, "value", outcome)
        self.responses[(destination, status_label(status), outcome)] += 1
        self.latency.setdefault(destination, Latency()).observe(seconds)

    def observer(self, destination: str) -> Callable[[int | None, float, Any, int], None]:
        """The `PartnerClient.on_attempt` callback for one destination."""
        return lambda status, seconds, outcome, attempt: self.attempt(destination, status, seconds, outcome, attempt)

    def dead_letter(self, stage: str, reason: str, destination: str | None) -> None:
        self.dead_letters[(stage, reason, destination or "")] += 1


def consumer_lag(
    ends: Mapping[tuple[str, int], int | None], positions: Mapping[tuple[str, int], int | None]
) -> dict[tuple[str, int], int]:
    """Records per partition not yet done: the log end offset minus the committed
    offset (or the next offset to read). Partitions with either unknown are left out."""
    lag = {}
    for tp, end in ends.items():
        position = positions.get(tp)
        if end is not None and position is not None:
            lag[tp] = max(0, end - position)
    return lag


@dataclass(frozen=True)
class Snapshot:
    destinations: Mapping[str, str]  # key -> display name, the enabled ones
    counters: Mapping[str, int]
    stats: Stats
    pending: Mapping[str, Mapping[str, int]]
    lag: Mapping[tuple[str, int], int]
    unacknowledged: int
    ready: bool
    # destination -> seconds since its oldest parked delivery first failed (none parked: absent)
    parked_oldest_age: Mapping[str, float] = field(default_factory=dict)
    # destination -> its circuit breaker's status (streams.core.breaker; absent: closed, never tripped)
    circuits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _family(kind: type, name: str, doc: str, labels: list[str], values: Mapping[tuple, float]) -> Metric:
    family = kind(name, doc, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


# the runtime's counters: prefix -> (metric name, help, label)
_COUNTER_FAMILIES = {
    "in": ("cs_relay_events_in", "Valid Segment messages taken from the input topic, by type.", "type"),
    "held": ("cs_relay_held", "Events held until they can be attributed, by destination.", "destination"),
    "skipped": (
        "cs_relay_skipped",
        "Events a destination does not take (by its rules), by destination.",
        "destination",
    ),
    "consent": (
        "cs_relay_skipped_for_consent",
        "Events kept from a destination by the user's consent (context.consent), by destination.",
        "destination",
    ),
}
_SINGLE_COUNTERS = {
    "duplicates": ("cs_relay_duplicates", "Messages dropped as a repeated messageId."),
    "merged.anonymous": ("cs_relay_anonymous_merged", "Anonymous profiles merged into a user after login."),
}
# Counted from the hooks instead (with HTTP status and destination).
_FROM_HOOKS = ("done.", "fail.", "retry.", "dead_lettered.")


def _counter_families(counters: Mapping[str, int]) -> list[Metric]:
    grouped: dict[str, dict[tuple, float]] = {prefix: {} for prefix in _COUNTER_FAMILIES}
    single: dict[str, float] = {}
    other: dict[tuple, float] = {}
    for key, value in counters.items():
        prefix, _, rest = key.partition(".")
        if key in _SINGLE_COUNTERS:
            single[key] = value
        elif prefix in _COUNTER_FAMILIES and rest:
            grouped[prefix][(rest,)] = value
        elif not key.startswith(_FROM_HOOKS):
            other[(key,)] = value
    families = [
        _family(CounterMetricFamily, name, doc, [label], grouped[prefix])
        for prefix, (name, doc, label) in _COUNTER_FAMILIES.items()
    ]
    families += [
        CounterMetricFamily(name, doc, value=single.get(key, 0)) for key, (name, doc) in _SINGLE_COUNTERS.items()
    ]
    families.append(
        _family(CounterMetricFamily, "cs_relay_app_events", "Other cs-relay counters, by name.", ["counter"], other)
    )
    return families


def _by_outcome(stats: Stats, outcome: str) -> dict[tuple, float]:
    return {(dest, status): n for (dest, status, out), n in stats.responses.items() if out == outcome}


def metric_families(snapshot: Snapshot) -> list[Metric]:
    """Every metric of a worker, as Prometheus metric families."""
    stats = snapshot.stats
    families = _counter_families(snapshot.counters)
    families += [
        _family(
            CounterMetricFamily,
            "cs_relay_delivered",
            "Deliveries a partner accepted, by destination and HTTP status.",
            ["destination", "status"],
            _by_outcome(stats, DONE),
        ),
        _family(
            CounterMetricFamily,
            "cs_relay_retried",
            "Partner answers worth another try (408, 429, 5xx, no answer), by destination and HTTP status.",
            ["destination", "status"],
            _by_outcome(stats, RETRY),
        ),
        _family(
            CounterMetricFamily,
            "cs_relay_delivery_failed",
            "Partner refusals (400, 401, 403, 404, 413, 422, ...): dead-lettered, by destination and HTTP status.",
            ["destination", "status"],
            _by_outcome(stats, FAIL),
        ),
        _family(
            CounterMetricFamily,
            "cs_relay_dead_lettered",
            "Records sent to the dead-letter topic.",
            ["stage", "reason", "destination"],
            stats.dead_letters,
        ),
        _family(
            GaugeMetricFamily,
            "cs_relay_pending_events",
            "Events waiting for a destination in this worker's partitions: held until attributable, "
            "released and not yet confirmed, or parked for a retry.",
            ["destination", "state"],
            {(d, state): n for d, counts in snapshot.pending.items() for state, n in counts.items()},
        ),
        _family(
            GaugeMetricFamily,
            "cs_relay_parked_oldest_age_seconds",
            "Seconds since the oldest parked delivery of a destination first failed, in this worker's "
            "partitions (0: none parked).",
            ["destination"],
            {
                (d,): snapshot.parked_oldest_age.get(d, 0.0)
                for d in sorted({*snapshot.destinations, *snapshot.parked_oldest_age})
            },
        ),
        _family(
            GaugeMetricFamily,
            "cs_relay_circuit_state",
            "Each destination's circuit breaker: 0 closed, 1 half-open (a probe request goes), 2 open "
            "(deliveries park without calling it), 3 paused (it refuses our credentials: 401/403).",
            ["destination"],
            {(d,): GAUGE.get(_circuit(snapshot, d)["state"], 0) for d in snapshot.destinations},
        ),
        _family(
            GaugeMetricFamily,
            "cs_relay_destination_paused",
            "1 while a destination refuses cs-relay's credentials (401/403 to every request): its deliveries "
            "park until a probe request succeeds.",
            ["destination"],
            {(d,): int(_circuit(snapshot, d)["state"] == "paused") for d in snapshot.destinations},
        ),
        _family(
            GaugeMetricFamily,
            "cs_relay_consumer_lag_records",
            "Records of this worker's input partitions not yet processed and committed.",
            ["topic", "partition"],
            {(t, str(p)): n for (t, p), n in snapshot.lag.items()},
        ),
        GaugeMetricFamily(
            "cs_relay_unacknowledged_events", "Events taken whose work is not finished.", value=snapshot.unacknowledged
        ),
        GaugeMetricFamily(
            "cs_relay_ready", "1 when partitions are assigned and tables recovered.", value=1 if snapshot.ready else 0
        ),
    ]
    latency = HistogramMetricFamily(
        "cs_relay_partner_request_seconds",
        "Partner request round trips (every attempt), by destination.",
        labels=["destination"],
    )
    for dest, histogram in sorted(stats.latency.items()):
        latency.add_metric([dest], histogram.cumulative(), histogram.total)
    families.append(latency)
    families.append(build_info())
    return families


def versions() -> dict[str, str]:
    """`GET /version` of the worker and of `cs-relay ingest`, with the event loop it runs on."""
    try:
        faust_version = package_version("faust-streaming")
    except PackageNotFoundError:  # pragma: no cover - a dependency of the project
        faust_version = "unknown"
    return {
        "version": streams.__version__,
        "python": platform.python_version(),
        "faust": faust_version,
        "event_loop": eventloop.running(),
    }


def build_info() -> Metric:
    info = InfoMetricFamily("cs_relay_build", "The running cs-relay version (always 1).")
    info.add_metric([], {"version": streams.__version__})
    return info


def with_process_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """`registry` with prometheus_client's process (CPU seconds, resident and virtual
    memory bytes, open file descriptors, start time), platform (`python_info`) and GC
    collectors registered on it."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class _SnapshotCollector:
    """The worker's own families, from a snapshot taken at each scrape."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return metric_families(self._snapshot())


def worker_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """The worker's CollectorRegistry: `snapshot()` is called at each scrape."""
    registry = with_process_collectors(CollectorRegistry(auto_describe=False))
    registry.register(_SnapshotCollector(snapshot))
    return registry


def render_metrics(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition of a snapshot, with the process metrics."""
    return generate_latest(worker_registry(lambda: snapshot))


def _circuit(snapshot: Snapshot, destination: str) -> Mapping[str, Any]:
    return snapshot.circuits.get(destination) or {"state": "closed"}


def status_document(snapshot: Snapshot) -> dict[str, Any]:
    """`GET /status`: per destination what was delivered and dead-lettered (since this
    worker started), what is retrying (parked) and pending (held or releasing) in its
    partitions now, plus consumer lag."""
    stats = snapshot.stats
    destinations = {}
    for dest, name in snapshot.destinations.items():
        waiting = snapshot.pending.get(dest, {})
        destinations[dest] = {
            "name": name,
            "delivered": sum(n for (d, _, out), n in stats.responses.items() if d == dest and out == DONE),
            "retrying": waiting.get("parked", 0),
            "pending": waiting.get("held", 0) + waiting.get("releasing", 0),
            "dead_lettered": sum(n for (_, _, d), n in stats.dead_letters.items() if d == dest),
            "held": waiting.get("held", 0),
            "releasing": waiting.get("releasing", 0),
            "skipped_for_consent": snapshot.counters.get(f"consent.{dest}", 0),
        }
    return {
        "ready": snapshot.ready,
        "destinations": destinations,
        "dead_lettered_without_destination": sum(n for (_, _, d), n in stats.dead_letters.items() if not d),
        "events_in": {k.partition(".")[2]: v for k, v in sorted(snapshot.counters.items()) if k.startswith("in.")},
        "consumer_lag": {
            "total": sum(snapshot.lag.values()),
            "partitions": [{"topic": t, "partition": p, "lag": n} for (t, p), n in sorted(snapshot.lag.items())],
        },
        "unacknowledged_events": snapshot.unacknowledged,
        "circuits": {d: dict(_circuit(snapshot, d)) for d in snapshot.destinations},
    }
