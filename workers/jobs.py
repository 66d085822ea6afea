"""Long jobs: one `Runner` drives every kind (reprocessing and the scheduled jobs) step by
step, each step a bounded unit of work in its own transaction with the job's progress
and resume cursor, so a job killed anywhere resumes where it stopped, counts nothing
twice, and shows done/total as it goes.

A kind is a small object with `total()` and `step(cursor)`; the runner owns the rest:
claiming the job (one runner at a time, fenced by a token, taken over when its runner
stops beating), transient-error retries, cancellation between steps, time slices (a
Celery task hands the rest of a long job to a continuation task), failure records.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import psycopg
import redis

from ingest.config import Settings
from ingest.queue import task_message
from ingest.store import events, jobs
from workers.failure.policy import RETRYABLE, backoff
from workers.normalize import Rules
from workers.reprocess import reprocess

log = logging.getLogger(__name__)

# A runner that has not written progress for this long is presumed dead and its job may be
# taken over (a taken-over runner cannot write: its token is fenced). Every step is a
# bounded batch, each statement under KOALA_STATEMENT_TIMEOUT_MS; this leaves room for
# several statements stuck on locks for the whole timeout.
STALE_SECONDS = 600.0
TRANSIENT_STEP_RETRIES = 5

# Errors a step retries: the same ones a live batch retries.


@dataclass(slots=True)
class Step:
    """What one step did: where the next one starts, units done, counts, errors."""

    cursor: Any
    done: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


class Job(Protocol):
    kind: ClassVar[str]

    def total(self, conn: psycopg.Connection) -> int | None: ...

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step: ...


@dataclass(slots=True)
class Context:
    """What jobs may use besides their connection."""

    settings: Settings
    rules: Rules
    redis: Callable[[], redis.Redis]


def parse_time(value: str) -> datetime:
    """ISO-8601 date or time; without an offset it is UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


Builder = Callable[[dict[str, Any], Context], Job]


def _reprocess(row: dict[str, Any], ctx: Context) -> Job:
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


def builders() -> dict[str, Builder]:
    from workers import maintenance

    return {"reprocess": _reprocess, **maintenance.BUILDERS}


class Runner:
    """Runs one job to its end, to a cancel, or to the end of a time slice."""

    def __init__(
        self,
        connect: Callable[[], AbstractContextManager[psycopg.Connection]],
        ctx: Context,
        *,
        on_step: Callable[[Step, int | None], None] | None = None,
    ) -> None:
        self.connect = connect
        self.ctx = ctx
        self.on_step = on_step

    def run(self, job_id: int, time_budget: float | None = None) -> str:
        """The job's status when this runner stops: `done`, `failed`, `cancelled`,
        `queued` (time slice over: hand it on), `interrupted` (Ctrl-C), `lost` (the
        database went away mid-step), or `busy` (another runner holds it, or it is
        finished)."""
        token = uuid.uuid4().hex
        started = time.monotonic()
        with self.connect() as conn:
            try:
                with conn.transaction():
                    row = jobs.claim(conn, job_id, token, STALE_SECONDS)
            except jobs.JobConflict as conflict:
                log.warning("job %s waits: job %s of its kind is active", job_id,
                            conflict.active_id)  # fmt: skip
                return "busy"
            if row is None:
                return "busy"
            if row["cancel_requested"]:
                with conn.transaction():
                    jobs.finish(conn, job_id, token, "cancelled")
                return "cancelled"
            try:
                try:
                    job = builders()[row["kind"]](row, self.ctx)
                    total = row["total"]
                    if total is None:
                        with conn.transaction():
                            total = job.total(conn)
                            jobs.progress(conn, job_id, token, cursor=row["cursor"], done=0,
                                          counts={}, total=total)  # fmt: skip
                except Exception as error:
                    log.exception("job %s cannot start", job_id)
                    return self._fail(conn, job_id, token, error)
                return self._steps(
                    conn, job_id, token, job, row["cursor"], total, started, time_budget
                )
            except KeyboardInterrupt:
                # Ctrl-C anywhere: the step in flight rolls back, the job stays resumable.
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                with conn.transaction():
                    jobs.release(conn, job_id, token, "interrupted")
                raise

    def _steps(
        self,
        conn: psycopg.Connection,
        job_id: int,
        token: str,
        job: Job,
        cursor: Any,
        total: int | None,
        started: float,
        time_budget: float | None,
    ) -> str:
        failures = 0
        while True:
            try:
                with conn.transaction():
                    conn.execute(
                        "SELECT set_config('statement_timeout', %s, true)",
                        (str(self.ctx.settings.statement_timeout_ms),),
                    )
                    step = job.step(conn, cursor)
                    cancelled = jobs.progress(
                        conn,
                        job_id,
                        token,
                        cursor=step.cursor,
                        done=step.done,
                        counts=dict(step.counts),
                        errors=step.errors,
                    )
            except jobs.TakenOver:
                log.warning("job %s was taken over by another runner", job_id)
                return "busy"
            except RETRYABLE as error:
                if conn.broken:
                    # PostgreSQL went away: this runner cannot even record it. The job stays
                    # `running` until its heartbeat is stale; then the beat's sweep (or the
                    # same command, from the CLI) resumes it from its cursor.
                    log.error("job %s lost its connection (%s)", job_id, error)
                    return "lost"
                failures += 1
                if failures > TRANSIENT_STEP_RETRIES:
                    return self._fail(conn, job_id, token, error)
                delay = backoff(failures, cap=2**TRANSIENT_STEP_RETRIES)
                log.warning("job %s: %s; step retried in %.1fs", job_id, error, delay)
                time.sleep(delay)
                continue
            except Exception as error:
                log.exception("job %s failed", job_id)
                return self._fail(conn, job_id, token, error)
            failures = 0
            cursor = step.cursor
            if self.on_step is not None:
                self.on_step(step, total)
            status = None
            if step.finished:
                status = "done"
            elif cancelled:
                status = "cancelled"
            if status is not None:
                with conn.transaction():
                    jobs.finish(conn, job_id, token, status)
                log.info("job %s %s", job_id, status)
                return status
            if time_budget is not None and time.monotonic() - started > time_budget:
                with conn.transaction():
                    jobs.release(conn, job_id, token, "queued")
                return "queued"

    def _fail(self, conn: psycopg.Connection, job_id: int, token: str, error: BaseException) -> str:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        try:
            with conn.transaction():
                jobs.finish(conn, job_id, token, "failed", f"{type(error).__name__}: {error}")
        except psycopg.Error:
            log.exception("job %s: could not record its failure (it will be taken over)", job_id)
        return "failed"
