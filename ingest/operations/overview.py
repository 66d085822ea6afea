"""The overview: every project this actor sees, reconciled, with the pipeline's health.

Per project: received = stored + duplicates + rejected + dead_lettered + in_flight, and
calls received per minute over the last hour (the receiver counts them per minute in its
flush, ingest/queue.py). For the pipeline: queue depth and the age of its oldest call,
the breaker, and the workers alive (each heartbeats into one hash, workers/recovery.py).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from ingest.operations import breaker
from ingest.operations.context import Ops
from ingest.operations.stats import Stats, counts, received_key
from ingest.queue import minute_key, oldest_received, workers_key
from ingest.store import projects

MINUTES = 60


class ProjectOverview(BaseModel):
    stats: Stats
    reconciled: bool = Field(
        description="in_flight is not negative: nothing finished that was not received."
    )
    calls_per_minute: list[int] = Field(
        description=f"Calls received in each of the last {MINUTES} minutes, oldest first."
    )


class Overview(BaseModel):
    at: datetime
    projects: list[ProjectOverview]
    queue_depth: int
    oldest_queued_seconds: float | None = Field(
        description="Age of the oldest call waiting in the calls queue; null when empty."
    )
    breaker: breaker.BreakerState
    workers_alive: list[str] = Field(description="Workers that heartbeated recently.")


def overview(ops: Ops) -> Overview:
    now = time.time()
    settings = ops.settings
    prefix = settings.redis_key_prefix
    seen = [p for p in projects.list_active(ops.conn) if ops.actor.sees(p.id)]
    counters = received_key(prefix)
    pipe = ops.redis.pipeline(transaction=False)
    pipe.hgetall(counters)
    minutes = [int(now) // 60 - i for i in range(MINUTES - 1, -1, -1)]
    for minute in minutes:
        pipe.hgetall(minute_key(counters, minute * 60))
    pipe.llen(settings.queue_key)
    pipe.lindex(settings.queue_key, -1)
    pipe.hgetall(workers_key(prefix))
    answers = pipe.execute()
    received = {k.decode(): int(v) for k, v in answers[0].items()}
    per_minute = [{k.decode(): int(v) for k, v in a.items()} for a in answers[1 : 1 + MINUTES]]
    depth, oldest, beats = answers[1 + MINUTES :]
    out = []
    for project in seen:
        stats = counts(ops.conn, project, received.get(str(project.id), 0))
        out.append(
            ProjectOverview(
                stats=stats,
                reconciled=stats.in_flight >= 0,
                calls_per_minute=[m.get(str(project.id), 0) for m in per_minute],
            )
        )
    first = oldest_received(oldest) if oldest else None
    alive_after = now - settings.lost_after_seconds
    return Overview(
        at=datetime.fromtimestamp(now, UTC),
        projects=out,
        queue_depth=int(depth),
        oldest_queued_seconds=max(0.0, now - first.timestamp()) if first else None,
        breaker=breaker.state(ops),
        workers_alive=sorted(k.decode() for k, v in beats.items() if float(v) >= alive_after),
    )
