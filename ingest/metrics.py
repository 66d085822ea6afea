"""Prometheus metrics of the receiver (the workers' live in workers/, see issue 8)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

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
REPLAYS = Counter(
    "koala_dead_letters_replayed_total",
    "Dead letters sent back through the pipeline by an operator or the auto-replay.",
    registry=REGISTRY,
)
