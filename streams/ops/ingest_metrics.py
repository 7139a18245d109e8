"""The ingest service's metrics (`/metrics` of `cs-relay ingest`), on a registry of its
own with the process collectors: requests by path and status, messages produced, produce
latency, request body bytes and whether Kafka is ready."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.ops.observe import build_info, with_process_collectors
from streams.ops.tracking_api import MAX_REQUEST_BYTES


class IngestMetrics:
    """The ingest's metrics, on a registry of its own (with the process collectors)."""

    BODY_BUCKETS = (256, 1024, 4096, 16384, 65536, 131072, 262144, MAX_REQUEST_BYTES)

    def __init__(self, sink: Any) -> None:
        self.registry = with_process_collectors(CollectorRegistry(auto_describe=False))
        self.registry.register(_BuildInfo())
        r = self.registry
        self.requests = Counter(
            "cs_relay_ingest_requests", "HTTP requests answered, by path and status.", ["path", "status"], registry=r
        )
        self.produced = Counter(
            "cs_relay_ingest_messages_produced",
            "Messages Kafka acknowledged (acks=all) on the input topic.",
            registry=r,
        )
        self.produce_seconds = Histogram(
            "cs_relay_ingest_produce_seconds",
            "Time from handing a request's records to the producer to Kafka's acknowledgement of all of them "
            "(outcome acknowledged), or to the 503 (outcome unavailable).",
            ["outcome"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.body_bytes = Histogram(
            "cs_relay_ingest_request_body_bytes",
            "Request bodies as sent (before gzip decoding), in bytes.",
            registry=r,
            buckets=self.BODY_BUCKETS,
        )
        ready = Gauge(
            "cs_relay_ingest_kafka_ready",
            "1 when the last start, send or check of the Kafka producer succeeded.",
            registry=r,
        )
        ready.set_function(lambda: 0.0 if getattr(sink, "connected", True) is not True else 1.0)
        for outcome in ("acknowledged", "unavailable"):
            self.produce_seconds.labels(outcome)  # both series from the start, for rate()


class _BuildInfo:
    def collect(self) -> list:
        return [build_info()]


def path_label(request: web.Request) -> str:
    """The route of a request, from a fixed set: `/v1/track` (the endpoint as called,
    one of ENDPOINTS), `/health`, ...; `unmatched` for a 404 or 405."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    endpoint = info.get("endpoint")
    return f"/v1/{endpoint}" if endpoint else info.route.resource.canonical
