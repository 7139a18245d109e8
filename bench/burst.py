"""Scenario g, one user's burst (issue 23): how long 200 other users wait behind one
user who sends thousands of tracks while both partners answer in 50 ms.

Each measurement (`measure`) has its own app id, topics and data dir (`Drains.driver`).
After the warm-up (every user's group call, delivered), the warm-up's worker keeps
running; the mocks get their latency, and the burst (the bursting user's tracks) then
the other users' tracks, one each, are produced in that order. The figure is the time
from the last produce (the last other user's track) until the last other user's track
has reached both partners; beside it, each other track's own produce-to-delivery time,
and how much of the burst had been delivered by then. The worker is stopped as soon as
the others are in: the rest of the burst is not waited for.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaProducer

from bench import stats
from bench.drain import CS_RELAY, Drains
from bench.harness import MEASURED, Phase, Receipts, Worker, add_latency, reset_mocks
from bench.scenarios import BurstPlan
from streams.runtime.topics import ensure_topics
from streams.testing.recorder import FAULTS_KEY


async def measure(drains: Drains, label: str, plan: BurstPlan, latency_ms: float) -> dict[str, Any]:
    """One burst of `plan` at `latency_ms`, measured on a running cs-relay worker."""
    bench = drains.driver(label)
    settings = bench.settings
    reset_mocks(drains.mocks)
    receipts = Receipts(drains.mocks)
    warm, burst = Phase("warm-up", plan.warm_up()), Phase("burst", plan.backlog())
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**settings.kafka_options(), acks="all", linger_ms=5)
    await producer.start()
    worker: Worker | None = None
    try:
        worker = await drains.warmed_up(label, CS_RELAY, bench, producer, receipts, warm)
        add_latency(drains.mocks, latency_ms)
        print(
            f"  {label}: {plan.burst:,} tracks of one user, then one of each of {plan.others} others, "
            f"{latency_ms:g} ms at both partners",
            flush=True,
        )
        await bench._produce(producer, burst)
        produced_s = time.monotonic()
        others = Phase("others", burst.calls[plan.burst :], burst.produced_us[plan.burst :])
        complete = await bench._until_delivered(receipts, others, worker)
        waited_s = time.monotonic() - produced_s
        receipts.collect()
    finally:
        for key in MEASURED:  # the rest of the burst goes quickly while the worker stops
            drains.mocks.apps[key][FAULTS_KEY].clear()
        if worker is not None:
            await worker.stop()
        await producer.stop()
    figures = burst_figures(receipts.all, burst.produced_us, plan.burst, complete)
    figures.update(
        plan={"burst": plan.burst, "others": plan.others, "groups": plan.groups},
        latency_ms=latency_ms,
        waited_s=round(waited_s, 1),
        app_id=settings.app_id,
    )
    reset_mocks(drains.mocks)
    print(
        f"  {label}: the last other user's track delivered {figures['last_other_after_last_produce_s']:.1f} s "
        f"after the last produce; {figures['burst_delivered_by_then']:,}/{plan.burst:,} of the burst by then",
        flush=True,
    )
    return figures


def burst_figures(receipts: list[stats.Receipt], produced_us: list[int], burst: int, complete: bool) -> dict[str, Any]:
    """The figures of one burst from what the partners received: `produced_us` holds
    the burst's produce times, then the others'. An event is delivered once both
    partners have it (a track goes to both)."""
    done = stats.completions(r for r in receipts if r.ok)
    partners_of = {}
    for r in receipts:
        if r.ok:
            partners_of.setdefault(r.event_us, set()).add(r.partner)
    delivered = {us: at for us, at in done.items() if partners_of[us] >= set(MEASURED)}
    bursting, others = produced_us[:burst], produced_us[burst:]
    last_produce = max(others)
    others_done = [delivered[us] for us in others if us in delivered]
    last_other = max(others_done, default=0)
    waits_s = [(delivered[us] - us) / stats.US for us in others if us in delivered]
    by_then = sum(1 for us in bursting if us in delivered and delivered[us] <= last_other)
    return {
        "complete": complete and len(others_done) == len(others),
        "others_delivered": len(others_done),
        "produce_s": round((last_produce - min(produced_us)) / stats.US, 3),
        "last_other_after_last_produce_s": round((last_other - last_produce) / stats.US, 3)
        if others_done
        else float("nan"),
        "other_track_produce_to_delivery_s": stats.summary(waits_s),
        "burst_delivered_by_then": by_then,
    }
