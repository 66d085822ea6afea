"""The job runner: one `Runner` drives every kind (reprocessing and the scheduled jobs) step
by step, each step a bounded unit of work in its own transaction with the job's progress
and resume cursor, so a job killed anywhere resumes where it stopped, counts nothing
twice, and shows done/total as it goes.

A kind is a small object with `total()` and `step(cursor)` (workers/jobs/base.py), made by
the builder its kind registers (workers/jobs/kinds.py); the runner owns the rest: claiming
the job (one runner at a time, fenced by a token, taken over when its runner stops
beating), transient-error retries, cancellation between steps, time slices (a Celery task
hands the rest of a long job to a continuation task), failure records.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from ingest.store import batches, jobs
from workers.failure.policy import RETRYABLE, backoff
from workers.jobs import kinds
from workers.jobs.base import Context, Job, Step

log = logging.getLogger(__name__)

# Transient failures of one step retried (with backoff) before the job fails.
TRANSIENT_STEP_RETRIES = 5


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
                    row = jobs.claim(conn, job_id, token, jobs.STALE_SECONDS)
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
                    job = kinds.build(row, self.ctx)
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
                    batches.limit_statements(conn, self.ctx.settings.statement_timeout_ms)
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
