"""What a worker tells Redis about its batches, never failing a batch for it: the ledger
(settled after the commit, postponed for a retry: workers/recovery.py), the circuit breaker
(fed by every finished batch; a batch waits while it is open), the cluster-wide counters
every receiver's /metrics serves, and the live debugger's recent calls (ingest/debugger.py)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import redis

from ingest import debugger, metrics
from ingest.breaker import Breaker, queue_counts
from ingest.config import get_settings
from workers import pipeline, recovery
from workers.resources import RedisClient

log = logging.getLogger(__name__)


def settle(task_id: str, queue: str) -> None:
    """The batch is committed: forget its ledger entry (the recovery sweep does it later if
    Redis is away now)."""
    try:
        recovery.settle(RedisClient.get(), get_settings().redis_key_prefix, queue, task_id)
    except redis.RedisError as error:
        log.warning("could not settle batch %s in the ledger: %s", task_id, error)


def postpone(task_id: str, queue: str, delay: float) -> None:
    settings = get_settings()
    try:
        recovery.postpone(
            RedisClient.get(),
            settings.redis_key_prefix,
            queue,
            task_id,
            delay,
        )
    except redis.RedisError as error:
        log.warning("could not postpone batch %s in the ledger: %s", task_id, error)


def breaker() -> Breaker:
    settings = get_settings()
    return Breaker(RedisClient.get(), settings.redis_key_prefix, settings.breaker_policy())


def hold_while_breaker_open(task_id: str) -> None:
    """Hold the batch (unacknowledged: nothing is lost) while the breaker is open, instead
    of draining the queue into dead letters. Redis trouble never blocks work here."""
    logged = 0.0
    while True:
        try:
            state = breaker().state()
        except redis.RedisError:
            return
        if state is None:
            return
        if time.monotonic() - logged > 30:
            log.error(
                "circuit breaker open (%s); holding batch %s until %s",
                state["reason"],
                task_id,
                datetime.fromtimestamp(state["until"], UTC).isoformat(),
            )
            logged = time.monotonic()
        time.sleep(min(5.0, max(0.5, state["until"] - time.time())))


def report(result: pipeline.BatchResult, retries: int = 0, seconds: float | None = None) -> None:
    """Feed the breaker, the cluster-wide counters (the workers' Prometheus metrics, served
    by every receiver's /metrics) and the live debugger's stream (ingest/debugger.py);
    never fail a batch for them."""
    settings = get_settings()
    fresh_dead = max(0, result.total("dead_lettered"))
    finished = result.total("stored") + result.total("duplicates") + fresh_dead
    try:
        state = breaker().record(finished, fresh_dead)
        # the counters and the debugger's entries: one pipeline, one round trip
        pipe = RedisClient.get().pipeline(transaction=False)  # no MULTI: nothing to isolate
        queued = queue_counts(
            pipe,
            settings.redis_key_prefix,
            {**result.reasons(), "retries": retries, **worker_metrics(result, seconds)},
        )
        queued += debugger.add(pipe, settings.redis_key_prefix, result.seen)
        if queued:
            pipe.execute()
    except redis.RedisError as error:
        log.warning("could not update breaker or counters: %s", error)
        return
    if state is not None:
        log.error(
            "circuit breaker OPENED: %s; workers hold their batches for %d s",
            state["reason"],
            settings.breaker_cooldown_seconds,
        )


def worker_metrics(result: pipeline.BatchResult, seconds: float | None) -> dict[str, int]:
    """A finished batch as increments of the counters `ingest.metrics.WorkerCounters`
    exposes (times in microseconds: Redis counts integers)."""
    # Project counters net a resolved replay out of `dead_lettered`; Prometheus counters
    # never go down, so here a replay is a new outcome and its letter stays counted.
    out = {
        "calls:stored": result.total("stored"),
        "calls:duplicate": result.total("duplicates") + result.total("replay_copies"),
        "calls:conflicting_duplicate": result.total("conflicting_duplicates"),
        "calls:rejected": result.total("rejected"),
        "calls:dead_lettered": result.total("dead_lettered") + result.total("replays_resolved"),
    }
    out["merges"] = result.total("merges")
    out["merges_refused"] = result.total("merges_refused")
    out["deletions"] = result.total("deletions")
    for stage, spent in result.seconds.items():
        out[f"stage_us:{stage}"] = int(spent * 1_000_000)
    if seconds is not None:
        out["batches"] = 1
        out["batch_us_sum"] = int(seconds * 1_000_000)
        for bound in metrics.BATCH_BUCKETS:
            if seconds <= bound:
                out[f"batch_le:{bound}"] = 1
    return out
