"""The `reprocess` job kind: a project's stored events through today's rules again
(workers/reprocess.py does one batch), started by the API, the CLI or the schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import psycopg
import redis

from ingest.config import Settings
from ingest.queue import task_message
from ingest.store import events, jobs
from workers.jobs.base import STALE_SECONDS, Context, Job, Step, parse_time
from workers.normalize import Rules
from workers.reprocess import reprocess


@dataclass(slots=True)
class ReprocessJob:
    """A project's events with `since <= timestamp < until`, a batch at a time in
    (timestamp, id) order; the cursor is the last (timestamp, id) done."""

    kind: ClassVar[str] = "reprocess"
    project_id: int
    since: datetime
    until: datetime
    batch_size: int
    rules: Rules

    @staticmethod
    def params(since: datetime, until: datetime, batch_size: int, rules: Rules) -> dict[str, Any]:
        if since >= until:
            raise ValueError("since must be before until")
        return {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "batch_size": batch_size,
            "rules": rules.as_params(),
        }

    def total(self, conn: psycopg.Connection) -> int | None:
        return events.count_in_range(conn, self.project_id, self.since, self.until)

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        after = (parse_time(cursor[0]), int(cursor[1])) if cursor else None
        rows = events.in_range(
            conn, self.project_id, self.since, self.until, after, self.batch_size
        )
        if not rows:
            return Step(cursor, finished=True)
        outcome = reprocess(conn, self.project_id, rows, self.rules)
        last = rows[-1]
        return Step(
            [last["timestamp"].isoformat(), last["id"]],
            done=len(rows),
            counts=outcome.counts,
            errors=outcome.errors,
            finished=len(rows) < self.batch_size,
        )


def build(row: dict[str, Any], ctx: Context) -> Job:
    params = row["params"]
    return ReprocessJob(
        project_id=int(row["project_id"]),
        since=parse_time(params["since"]),
        until=parse_time(params["until"]),
        batch_size=int(params.get("batch_size") or ctx.settings.reprocess_batch_size),
        rules=Rules.from_params(params["rules"]) if "rules" in params else ctx.rules,
    )


def start_reprocess(
    conn: psycopg.Connection,
    project_id: int,
    params: dict[str, Any],
    trigger: str,
    *,
    restart: bool = False,
) -> tuple[int, bool]:
    """The reprocessing job for these parameters: an unfinished one with exactly the same
    parameters is resumed from its cursor (unless `restart`, which cancels it), otherwise
    a new one. Returns (job id, resumed). `jobs.JobConflict` if another reprocessing of
    the project is active."""
    previous = jobs.unfinished(conn, "reprocess", project_id, params)
    active = jobs.active(conn, "reprocess", project_id)
    if active is not None and active != previous:
        raise jobs.JobConflict(active)
    if previous is not None and not restart:
        return previous, True
    if previous is not None:
        jobs.cancel(conn, previous)
        jobs.finish_stale_cancelled(conn, previous, STALE_SECONDS)
    return jobs.create(conn, "reprocess", project_id, params, trigger), False


def enqueue(client: redis.Redis, settings: Settings, job_id: int) -> None:
    """Hand a job to the workers (the jobs queue)."""
    message = task_message(settings.jobs_queue, "koala.run_job", [job_id], f"<job {job_id}>")
    client.lpush(settings.redis_key_prefix + settings.jobs_queue, message)
