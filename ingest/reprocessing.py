"""Starting a reprocessing (a project's stored events through today's rules again): its
parameters, its job row (an unfinished run with the same parameters resumes), and its
message to the workers. The admin API, the CLI and the schedule start it here; the workers
run it (workers/jobs/reprocessing.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import redis

from ingest.config import Settings
from ingest.identifiers import CompanyDomains, Rules
from ingest.queue import task_message
from ingest.store import jobs
from ingest.store.projects import Project


def parse_time(value: str) -> datetime:
    """ISO-8601 date or time; without an offset it is UTC."""
    return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))


def as_utc(value: datetime) -> datetime:
    """A time without an offset is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def params(since: datetime, until: datetime, batch_size: int, rules: Rules) -> dict[str, Any]:
    """A run's parameters: its range, batch size, and the rules it runs with (recorded, so
    whichever process runs or resumes it applies the same)."""
    if since >= until:
        raise ValueError("since must be before until")
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "batch_size": batch_size,
        "rules": rules.as_params(),
    }


def project_rules(rules: Rules, project: Project) -> Rules:
    """The deployment's rules with the project's company exceptions folded in: what a
    reprocessing of that project records and runs with, as its live calls are normalized
    (workers/project_rules.py)."""
    if not project.company_free_domains and not project.company_work_domains:
        return rules
    return rules.with_company_domains(
        CompanyDomains(frozenset(project.company_free_domains),
                       frozenset(project.company_work_domains))
    )  # fmt: skip


def start(
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
        jobs.finish_stale_cancelled(conn, previous, jobs.STALE_SECONDS)
    return jobs.create(conn, "reprocess", project_id, params, trigger), False


def enqueue(client: redis.Redis, settings: Settings, job_id: int) -> None:
    """Hand a job to the workers (the jobs queue)."""
    message = task_message(settings.jobs_queue, "koala.run_job", [job_id], f"<job {job_id}>")
    client.lpush(settings.redis_key_prefix + settings.jobs_queue, message)
