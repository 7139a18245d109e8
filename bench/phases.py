"""Scenario a's phases (introductions, backlog, paced) and the figures drawn from what
the partners received in each: throughput, latency, the per-second series, and the
requests to send again without cs-relay (the HTTP ceiling)."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import mix, stats
from bench.baselines import PartnerJobs
from bench.harness import MEASURED, Phase, Receipts
from streams.destinations import plugin
from streams.settings import Settings
from streams.testing.mocks import MockServers

QUARTER_US = 250_000  # a drain's timeline (`phase_figures(quarters=True)`)


@dataclass
class Measured:
    """What the worker did in the measured phases."""

    backlog: dict[str, Any]
    paced: dict[str, Any]
    memory_kb: dict[str, int]
    worker_exit: int | None
    restart_s: float  # the measured worker's start to its first delivery
    started_us: int  # the measured worker's start, the charts' zero
    cpu_samples: list[tuple[int, float]]  # (time µs, the worker's CPU seconds)


def phases(args: argparse.Namespace) -> tuple[Phase, Phase, Phase]:
    """The run's calls: introductions and backlog from one plan; the paced phase
    continues with known groups and no waiting calls, so its latency is that of calls
    cs-relay can deliver at once."""
    first = mix.plan(
        args.groups + args.events, users=args.users, groups=args.groups, early_share=args.early_share, seed=args.seed
    )
    then = mix.plan(
        args.paced_events,
        users=args.users,
        groups=args.groups,
        early_share=0.0,
        seed=args.seed + 1,
        introductions=False,
    )
    return Phase("introductions", first[: args.groups]), Phase("backlog", first[args.groups :]), Phase("paced", then)


def in_phase(r: stats.Receipt, phase: Phase) -> bool:
    return bool(phase.produced_us) and phase.produced_us[0] <= r.event_us <= phase.produced_us[-1]


def phase_figures(
    receipts: Sequence[stats.Receipt], phase: Phase, *, latency: bool, quarters: bool = False
) -> dict[str, Any]:
    """Throughput (and latency) of one phase, from its receipts. The backlog's latency
    would only measure how long its events waited for the worker to start. `quarters`:
    also where the phase slowed, its events completed in each quarter of a second from
    its first request (`tracks_per_quarter_second`)."""
    mine = [r for r in receipts if in_phase(r, phase)]
    ok = [r for r in mine if r.ok]
    done = stats.completions(ok)
    first = min((r.received_us for r in mine), default=0)
    last = max(done.values(), default=0)
    figures: dict[str, Any] = {
        "events": len(phase.calls),
        "events_delivered": len(done),
        "requests": {p: sum(1 for r in ok if r.partner == p) for p in MEASURED},
        "requests_not_2xx": len(mine) - len(ok),
        "window_s": round((last - first) / stats.US, 3),
        "events_per_second": round(stats.rate(len(done), first, last), 1),
        "requests_per_second": round(stats.rate(len(ok), first, last), 1),
        "first_receipt_us": first,
    }
    if quarters:
        figures["tracks_per_quarter_second"] = stats.per_interval(done.values(), first, QUARTER_US)
    if latency:
        figures["latency_ms"] = stats.summary([r.latency_ms for r in ok])
        figures["latency_ms_by_partner"] = {
            p: stats.summary([r.latency_ms for r in ok if r.partner == p]) for p in MEASURED
        }
    return figures


def series(receipts: Sequence[stats.Receipt], measured: Measured, paced: Phase) -> dict[str, Any]:
    """Per second from the measured worker's start: events delivered, requests per
    partner, the worker's CPU use; and the paced phase's latency CDF."""
    start_us = measured.started_us
    ok = [r for r in receipts if r.ok]
    done = stats.completions(ok)
    seconds = len(stats.per_second(done.values(), start_us))
    cpu = [
        [round((b[0] - start_us) / stats.US, 2), round(stats.cpu_cores([a, b], a[0], b[0]), 3)]
        for a, b in itertools.pairwise(measured.cpu_samples)
    ]
    return {
        "start_us": start_us,
        "events_per_second": stats.per_second(done.values(), start_us, seconds),
        "requests_per_second": {
            p: stats.per_second((r.received_us for r in ok if r.partner == p), start_us, seconds) for p in MEASURED
        },
        "worker_cpu_cores": cpu,  # [seconds since start, cores used since the previous sample]
        "paced_from_second": (paced.produced_us[0] - start_us) // stats.US if paced.produced_us else None,
        "paced_latency_cdf_ms": [
            [round(p, 1), round(v, 2)] for p, v in stats.cdf_points([r.latency_ms for r in ok if in_phase(r, paced)])
        ],
    }


def replay_jobs(receipts: Receipts, phase: Phase, mocks: MockServers) -> list[PartnerJobs]:
    """The backlog's successful partner requests, to send again without cs-relay."""

    def requests(partner: str) -> list[tuple[str, Any]]:
        return [
            (record["raw_path"], record["json"])
            for record in receipts.records(partner)
            if 200 <= record["status"] < 300 and (r := stats.receipt(partner, record)) and in_phase(r, phase)
        ]

    # Each destination's own credentials, as its plugin attaches them for the worker.
    settings = Settings.from_env(mocks.worker_env())
    jobs = []
    for key in MEASURED:
        attached = plugin(key).credentials(settings.destinations[key])
        jobs.append(
            PartnerJobs(mocks.urls[key], requests(key), params=dict(attached.query), headers=dict(attached.headers))
        )
    return jobs
