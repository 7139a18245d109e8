"""The console's rate chart: the per-destination counters sampled every
SAMPLE_INTERVAL seconds (`destination_counts`, kept as `Sample`s by the journal) and
the per-minute rates between samples over the last CHART_SECONDS (`rates`). Nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

SAMPLE_INTERVAL = 15.0  # seconds between counter samples
CHART_SECONDS = 3600.0  # the rate chart's span
SAMPLES = int(CHART_SECONDS // SAMPLE_INTERVAL) + 1


@dataclass(frozen=True)
class Sample:
    at: float
    counts: Mapping[str, Mapping[str, int]]  # destination -> kind -> cumulative count


RATE_KINDS = ("delivered", "retried", "refused", "dead_lettered")


def destination_counts(stats: Any, destinations: Iterable[str]) -> dict[str, dict[str, int]]:
    """Cumulative per-destination counts from the runtime's `Stats`
    (streams.ops.observe): answers by outcome, and dead letters."""
    out = {d: dict.fromkeys(RATE_KINDS, 0) for d in destinations}
    kinds = {"done": "delivered", "retry": "retried", "fail": "refused"}
    for (dest, _status, outcome), n in stats.responses.items():
        if dest in out and outcome in kinds:
            out[dest][kinds[outcome]] += n
    for (_stage, _reason, dest), n in stats.dead_letters.items():
        if dest in out:
            out[dest]["dead_lettered"] += n
    return out


def rates(
    samples: Iterable[Sample],
    now: float,
    current: Mapping[str, Mapping[str, int]] | None = None,
    span: float = CHART_SECONDS,
) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Per destination, per interval between `samples` within `span` of `now` (the
    current counts as the last point, when given): (interval end, per-minute rate
    of each kind). A counter that went down (it cannot, but) counts as 0."""
    points = [s for s in samples if s.at >= now - span]
    if current is not None:
        points.append(Sample(now, current))
    out: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for before, after in _pairs(points):
        seconds = after.at - before.at
        if seconds <= 0:
            continue
        for dest, counts in after.counts.items():
            prior = before.counts.get(dest, {})
            out.setdefault(dest, []).append(
                (
                    after.at,
                    {k: max(0, counts.get(k, 0) - prior.get(k, 0)) * 60.0 / seconds for k in RATE_KINDS},
                )
            )
    return out


def _pairs(items: list[Sample]) -> Iterator[tuple[Sample, Sample]]:
    return zip(items, items[1:], strict=False)
