"""Prometheus metrics of the receiver (the workers' live in workers/, see issue 8)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "koala_receiver_requests_total",
    "HTTP requests answered, by endpoint kind and status code.",
    ["endpoint", "status"],
    registry=REGISTRY,
)
CALLS_ACCEPTED = Counter(
    "koala_receiver_calls_accepted_total",
    "Calls written to the queue.",
    ["source"],
    registry=REGISTRY,
)
CALLS_REJECTED = Counter(
    "koala_receiver_calls_rejected_total",
    "Calls refused for their content (kept in the rejections table), by reason.",
    ["source", "code"],
    registry=REGISTRY,
)
REQUEST_ERRORS = Counter(
    "koala_receiver_request_errors_total",
    "Requests refused as a whole (bad JSON, unknown key, over the limits, queue trouble).",
    ["code"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "koala_queue_depth_messages",
    "Messages waiting in the ingest queue, as last seen by this receiver.",
    registry=REGISTRY,
)
GROUP_COMMITS = Counter(
    "koala_receiver_queue_flushes_total",
    "Redis writes of the group commit (each carries one or more requests).",
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "koala_breaker_open",
    "1 while the dead-letter circuit breaker holds the workers.",
    registry=REGISTRY,
)


class WorkerCounters:
    """Counters the workers keep in one Redis hash (cluster-wide), exposed on each
    receiver's /metrics: retries, dead letters by reason, replays."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        retries = CounterMetricFamily(
            "koala_worker_retries", "Batch retries after a transient failure (all workers)."
        )
        retries.add_metric([], self.values.get("retries", 0))
        yield retries
        replays = CounterMetricFamily(
            "koala_dead_letters_replayed", "Dead letters sent back through the pipeline."
        )
        replays.add_metric([], self.values.get("replays", 0))
        yield replays
        dead = CounterMetricFamily(
            "koala_dead_letters",
            "Dead letters written (and failed replays), by reason.",
            labels=["reason"],
        )
        for key, value in sorted(self.values.items()):
            if key.startswith("reason:"):
                dead.add_metric([key.removeprefix("reason:")], value)
        yield dead


WORKER_COUNTERS = WorkerCounters()
REGISTRY.register(WORKER_COUNTERS)
