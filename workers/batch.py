"""One queued batch, exactly once: claim its key, run the pipeline, isolate what breaks it.

All in one transaction: the batch key (`processed_batches`) is claimed with the rows, so a
batch redelivered after a crash between commit and acknowledgement finds its key taken and
writes nothing (its counters move exactly once). What to do when this raises is
workers/failure/policy.py's to decide; workers/tasks.py carries it out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg

from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.store import batches
from workers import pipeline
from workers.failure import isolation
from workers.failure.policy import RETRYABLE

log = logging.getLogger(__name__)


def run(
    conn: psycopg.Connection,
    task_id: str,
    requests: Sequence[QueuedRequest],
    rules: Rules,
    statement_timeout_ms: int,
) -> pipeline.BatchResult | None:
    """Store the batch; None when it was committed already. Raises what the policy judges:
    a transient error, or something nobody foresaw."""
    with conn.transaction():
        batches.limit_statements(conn, statement_timeout_ms)
        if not batches.claim(conn, task_id):
            return None
        try:
            with conn.transaction():
                return pipeline.process(conn, requests, rules)
        except RETRYABLE:
            raise
        except Exception as error:
            log.warning("batch %s failed (%s); isolating the poison calls", task_id, error)
            return isolation.isolate(conn, requests, rules)


def dead_letter(
    conn: psycopg.Connection,
    task_id: str,
    requests: Sequence[QueuedRequest],
    reason: str,
    error: BaseException,
) -> pipeline.BatchResult | None:
    """Every call of the batch becomes a dead letter (its transient failures outlasted the
    retries); None when it was committed already."""
    with conn.transaction():
        if not batches.claim(conn, task_id):
            return None
        return isolation.dead_letter_all(conn, requests, reason, error)


def age_seconds(requests: Sequence[QueuedRequest], now: datetime | None = None) -> float:
    """How long ago the batch's oldest fresh call was received. A replay's calls carry their
    original (old) receipt time: only new calls age."""
    fresh = [r for r in requests if not r.is_replay]
    if not fresh:
        return 0.0
    stamps = [datetime.fromisoformat(r.received_at.replace("Z", "+00:00")) for r in fresh]
    return ((now or datetime.now(UTC)) - min(stamps)).total_seconds()
