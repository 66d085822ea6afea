"""Prometheus metrics: the receiver's own, and the workers' cluster-wide counters.

Workers are prefork Celery processes on many machines; rather than one scrape target per
pool process, each batch adds its counts to one Redis hash (`{prefix}metrics`, HINCRBY,
one round trip) and every receiver serves the cluster's totals on /metrics. Any receiver
answers for the whole cluster, so scrape one of them (or all, and use `max`)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

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
SDK_METRICS = Counter(
    "koala_receiver_sdk_metrics_total",
    "SDK telemetry analytics.js posts to /v1/m (its own invocations and errors), by metric;"
    " not calls: nothing is stored.",
    ["metric"],
    registry=REGISTRY,
)


@functools.lru_cache(maxsize=1024)
def labelled(metric: Counter, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set. prometheus_client's lookup
    takes a lock and builds a key on every call: a measurable share of a single call's
    cost in the receiver (bench/README.md). Label sets here are few (endpoints, statuses,
    sources, refusal codes)."""
    return metric.labels(*values)


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
QUEUE_OLDEST_AGE = Gauge(
    "koala_queue_oldest_age_seconds",
    "Age of the oldest queued call (since the receiver took it); 0 when the queue is empty.",
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "koala_breaker_open",
    "1 while the dead-letter circuit breaker holds the workers.",
    registry=REGISTRY,
)


# Upper bounds (seconds) of the batch latency histogram.
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Stage(StrEnum):
    """The worker's stages, timed by `workers.pipeline.BatchResult.timed` and exported as
    `koala_worker_stage_seconds_total{stage}`: one list, so none is timed and not exported
    (the delete stage was)."""

    NORMALIZE = "normalize"
    DEDUPE = "dedupe"
    RESOLVE = "resolve"
    STORE = "store"
    DELETE = "delete"


STAGES = tuple(Stage)
OUTCOMES = ("stored", "duplicate", "conflicting_duplicate", "rejected", "dead_lettered")


class WorkerCounters:
    """Counters the workers keep in one Redis hash (cluster-wide), exposed on each
    receiver's /metrics: calls by outcome, time per stage, batch latency, merges, retries,
    dead letters by reason, replays."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def _counter(self, name: str, doc: str, key: str, scale: float = 1) -> Metric:
        family = CounterMetricFamily(name, doc)
        family.add_metric([], self.values.get(key, 0) / scale)
        return family

    def collect(self) -> Iterator[Metric]:
        v = self.values
        calls = CounterMetricFamily(
            "koala_worker_calls",
            "Calls the workers finished, by outcome (stored, duplicate, ...).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            calls.add_metric([outcome], v.get(f"calls:{outcome}", 0))
        yield calls
        stages = CounterMetricFamily(
            "koala_worker_stage_seconds",
            "Time the workers spent in each pipeline stage.",
            labels=["stage"],
        )
        for stage in STAGES:
            stages.add_metric([stage], v.get(f"stage_us:{stage}", 0) / 1e6)
        yield stages
        batches = v.get("batches", 0)
        latency = HistogramMetricFamily(
            "koala_worker_batch_seconds", "Time from a batch's start to its commit."
        )
        latency.add_metric(
            [],
            [(str(b), v.get(f"batch_le:{b}", 0)) for b in BATCH_BUCKETS] + [("+Inf", batches)],
            v.get("batch_us_sum", 0) / 1e6,
        )
        yield latency
        yield self._counter("koala_worker_merges", "Profiles merged.", "merges")
        yield self._counter(
            "koala_worker_deletions",
            "Delete calls carried out (a person's data erased).",
            "deletions",
        )
        yield self._counter(
            "koala_worker_merges_refused",
            "Merges the email guard refused (two identified people kept apart).",
            "merges_refused",
        )
        yield self._counter(
            "koala_worker_retries", "Batch retries after a transient failure.", "retries"
        )
        yield self._counter(
            "koala_queue_recovered_batches",
            "Batches a killed consumer lost and the recovery sweep queued again.",
            "recovered",
        )
        yield self._counter(
            "koala_dead_letters_replayed", "Dead letters sent back through the pipeline.", "replays"
        )
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
