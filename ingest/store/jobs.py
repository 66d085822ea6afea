"""The `jobs` table: every run of a reprocessing or scheduled job, its progress and cursor.

A job is `queued`, then `running` while a runner holds it (its heartbeat moves), then
`done`, `failed` or `cancelled`. A runner that dies leaves it `running` with a stale
heartbeat: the next claim takes it over from its cursor. At most one job of a kind (and
project) is active at a time, by a partial unique index, so a job is never started on top
of itself; a scheduled run that finds one active is recorded as `skipped`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.store._json import jsonb

# A runner that has not written progress for this long is presumed dead and its job may be
# taken over (a taken-over runner cannot write: its token is fenced). Every step is a
# bounded batch, each statement under KOALA_STATEMENT_TIMEOUT_MS; this leaves room for
# several statements stuck on locks for the whole timeout.
STALE_SECONDS = 600.0

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "skipped")
MAX_ERRORS = 50

PUBLIC = (
    "j.id, j.kind, j.project_id, p.name AS project, j.params, j.trigger, j.period, j.status,"
    " j.done, j.total, j.counts, j.errors, j.cursor, j.cancel_requested, j.created_at,"
    " j.started_at, j.heartbeat_at, j.finished_at"
)


class AlreadyRan(Exception):
    """A scheduled job already has a run for this period."""


class JobConflict(Exception):
    """A job of this kind (and project) is already active."""

    def __init__(self, active_id: int) -> None:
        super().__init__(f"job {active_id} of this kind is already active")
        self.active_id = active_id


def create(
    conn: psycopg.Connection,
    kind: str,
    project_id: int | None,
    params: dict[str, Any],
    trigger: str,
    *,
    period: int | None = None,
    status: str = "queued",
) -> int:
    """A new job row; `JobConflict` if one of the same kind (and project) is active."""
    try:
        with conn.transaction():
            row = conn.execute(
                """
                INSERT INTO jobs (kind, project_id, params, trigger, period, status, started_at,
                                  heartbeat_at, finished_at)
                VALUES (%(kind)s, %(project)s, %(params)s, %(trigger)s, %(period)s, %(status)s,
                        CASE WHEN %(status)s = 'running' THEN now() END,
                        CASE WHEN %(status)s = 'running' THEN now() END,
                        CASE WHEN %(status)s = 'skipped' THEN now() END)
                RETURNING id
                """,
                {
                    "kind": kind,
                    "project": project_id,
                    "params": jsonb(params),
                    "trigger": trigger,
                    "period": period,
                    "status": status,
                },
            ).fetchone()
    except psycopg.errors.UniqueViolation as error:
        if error.diag.constraint_name == "jobs_one_active_idx":
            raise JobConflict(active(conn, kind, project_id) or 0) from None
        if error.diag.constraint_name == "jobs_one_per_period_idx":
            raise AlreadyRan(f"{kind} already ran in period {period}") from None
        raise
    assert row is not None
    return int(row[0])


def active(conn: psycopg.Connection, kind: str, project_id: int | None) -> int | None:
    row = conn.execute(
        "SELECT id FROM jobs WHERE kind = %s AND coalesce(project_id, 0) = coalesce(%s, 0)"
        " AND status IN ('queued', 'running')",
        (kind, project_id),
    ).fetchone()
    return int(row[0]) if row else None


def claim(
    conn: psycopg.Connection, job_id: int, runner: str, stale_seconds: float
) -> dict[str, Any] | None:
    """Take a job to run: a queued one, an interrupted one, or a running one whose runner
    stopped beating. None if it is finished or another runner is alive on it. `runner` is
    the fencing token every later write of this runner must match."""
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                """
            UPDATE jobs SET status = 'running', heartbeat_at = clock_timestamp(), runner = %s,
                            started_at = coalesce(started_at, now())
            WHERE id = %s AND (status IN ('queued', 'interrupted')
                  OR (status = 'running'
                      AND heartbeat_at < clock_timestamp() - make_interval(secs => %s)))
            RETURNING id, kind, project_id, params, cursor, done, total, counts,
                      cancel_requested
            """,
                (runner, job_id, stale_seconds),
            )
            return cur.fetchone()
    except psycopg.errors.UniqueViolation:
        # resuming an interrupted run while another of its kind (and project) is active
        kind = conn.execute("SELECT kind, project_id FROM jobs WHERE id = %s", (job_id,)).fetchone()
        raise JobConflict((active(conn, kind[0], kind[1]) or 0) if kind else 0) from None


class TakenOver(Exception):
    """Another runner took the job over (this one stopped beating for too long): the work
    of the current step must roll back."""


def progress(
    conn: psycopg.Connection,
    job_id: int,
    runner: str,
    *,
    cursor: Any,
    done: int,
    counts: dict[str, int],
    total: int | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> bool:
    """Record a step's progress (in the step's own transaction, so cursor and work commit
    together); return whether a cancel was requested meanwhile."""
    row = conn.execute(
        """
        UPDATE jobs SET cursor = %(cursor)s, done = done + %(done)s,
            total = coalesce(%(total)s, total), heartbeat_at = clock_timestamp(),
            counts = (SELECT coalesce(jsonb_object_agg(k, v), '{}'::jsonb) FROM (
                SELECT k, sum(v::bigint) AS v FROM (
                    SELECT key AS k, value AS v FROM jsonb_each_text(counts)
                    UNION ALL
                    SELECT key, value FROM jsonb_each_text(%(counts)s)) AS both_
                GROUP BY k) AS summed),
            errors = (SELECT coalesce(jsonb_agg(e), '[]'::jsonb) FROM (
                SELECT e FROM jsonb_array_elements(errors || %(errors)s) AS e
                LIMIT %(max_errors)s) AS kept)
        WHERE id = %(id)s AND runner = %(runner)s AND status = 'running'
        RETURNING cancel_requested
        """,
        {
            "id": job_id,
            "runner": runner,
            "cursor": Jsonb(cursor),
            "done": done,
            "total": total,
            "counts": Jsonb(counts),
            "errors": jsonb(errors or []),
            "max_errors": MAX_ERRORS,
        },
    ).fetchone()
    if row is None:
        raise TakenOver(f"job {job_id} was taken over by another runner")
    return bool(row[0])


def finish(
    conn: psycopg.Connection, job_id: int, runner: str, status: str, error: str | None = None
) -> None:
    conn.execute(
        """
        UPDATE jobs SET status = %s, finished_at = now(), heartbeat_at = clock_timestamp(),
            errors = CASE WHEN %s::text IS NULL THEN errors
                          ELSE errors || jsonb_build_array(jsonb_build_object('error', %s::text))
                     END
        WHERE id = %s AND runner = %s AND status = 'running'
        """,
        (status, error, error, job_id, runner),
    )


def release(conn: psycopg.Connection, job_id: int, runner: str, status: str) -> None:
    """A runner stopping before the end: `interrupted` (Ctrl-C; the same command resumes
    it) or `queued` (its time slice is over; a continuation task picks it up)."""
    conn.execute(
        "UPDATE jobs SET status = %s, heartbeat_at = clock_timestamp()"
        " WHERE id = %s AND runner = %s AND status = 'running'",
        (status, job_id, runner),
    )


def stalled(conn: psycopg.Connection, stale_seconds: float) -> list[int]:
    """Jobs nobody is running: queued or running with no heartbeat for a while (a lost
    continuation message, a killed runner). The beat's sweep hands them to a worker."""
    cur = conn.execute(
        "SELECT id FROM jobs WHERE status IN ('queued', 'running')"
        " AND coalesce(heartbeat_at, created_at) < now() - make_interval(secs => %s)"
        " ORDER BY id",
        (stale_seconds,),
    )
    return [int(r[0]) for r in cur.fetchall()]


def cancel(conn: psycopg.Connection, job_id: int) -> str | None:
    """Ask a job to stop: a queued or interrupted job is cancelled at once, a running one at
    its next step. Returns the job's status afterwards (None if there is no such job)."""
    row = conn.execute(
        """
        UPDATE jobs SET cancel_requested = true,
            status = CASE WHEN status IN ('queued', 'interrupted') THEN 'cancelled' ELSE status END,
            finished_at = CASE WHEN status IN ('queued', 'interrupted') THEN now()
                               ELSE finished_at END
        WHERE id = %s
        RETURNING status
        """,
        (job_id,),
    ).fetchone()
    return str(row[0]) if row else None


def finish_stale_cancelled(conn: psycopg.Connection, job_id: int, stale_seconds: float) -> None:
    """A cancelled job whose runner is gone (no heartbeat for a while, or an interrupted
    CLI run) is cancelled now rather than when a runner next looks."""
    conn.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = now()"
        " WHERE id = %s AND cancel_requested AND status = 'running'"
        " AND heartbeat_at < clock_timestamp() - make_interval(secs => %s)",
        (job_id, stale_seconds),
    )


def get(conn: psycopg.Connection, job_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {PUBLIC} FROM jobs j LEFT JOIN projects p ON p.id = j.project_id"
            " WHERE j.id = %s",
            (job_id,),
        )
        return cur.fetchone()


def recent(
    conn: psycopg.Connection,
    kind: str | None,
    limit: int,
    before: int | None = None,
    project_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated on id; only these projects' jobs when `project_ids`
    is given."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {PUBLIC} FROM jobs j LEFT JOIN projects p ON p.id = j.project_id"
            " WHERE (%(kind)s::text IS NULL OR j.kind = %(kind)s)"
            " AND (%(before)s::bigint IS NULL OR j.id < %(before)s)"
            " AND (%(projects)s::bigint[] IS NULL OR j.project_id = ANY(%(projects)s))"
            " ORDER BY j.id DESC LIMIT %(limit)s",
            {"kind": kind, "before": before, "limit": limit, "projects": project_ids},
        )
        return cur.fetchall()


def unfinished(
    conn: psycopg.Connection, kind: str, project_id: int | None, params: dict[str, Any]
) -> int | None:
    """The newest interrupted (or abandoned) job with exactly these parameters: what a
    repeated command resumes instead of starting over."""
    row = conn.execute(
        "SELECT id FROM jobs WHERE kind = %s AND coalesce(project_id, 0) = coalesce(%s, 0)"
        " AND params = %s AND status IN ('interrupted', 'running', 'queued')"
        " ORDER BY id DESC LIMIT 1",
        (kind, project_id, jsonb(params)),
    ).fetchone()
    return int(row[0]) if row else None


def expire(conn: psycopg.Connection, older_than: datetime) -> int:
    cur = conn.execute(
        "DELETE FROM jobs WHERE finished_at < %s AND status IN ('done', 'failed', 'cancelled',"
        " 'skipped')",
        (older_than,),
    )
    return cur.rowcount


def recent_done(conn: psycopg.Connection, kind: str) -> dict[str, Any] | None:
    """The newest finished run of a kind (where an incremental job starts again)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, params, cursor, finished_at FROM jobs WHERE kind = %s AND status = 'done'"
            " ORDER BY id DESC LIMIT 1",
            (kind,),
        )
        return cur.fetchone()
