"""The beat schedule, in one place: which jobs run when, and how a run knows its period.

Every entry is an interval in seconds from a setting (0 turns it off). Safety against
doubled runs is layered: celery-redbeat's Redis lock lets one beat process send the
schedule however many are started; a run records its period (`epoch // interval`) and a
unique index refuses a second run of a kind in one period; and a run that finds its kind
still active (the previous run is slow) is recorded as `skipped` rather than started on
top of it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest import reprocessing
from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.jobkinds import KINDS
from ingest.store import jobs, projects
from workers.jobs import kinds

log = logging.getLogger(__name__)

# The sweep that hands stalled jobs (a lost continuation, a killed runner) to a worker.
RESUME_EVERY_SECONDS = 60
# The sweep that queues again the batches a killed worker held or lost
# (workers/recovery.py): twice per KOALA_LOST_AFTER_SECONDS, so a batch waits at most 1.5 x
# that after its holder died (30 s with the defaults); at most every 30 s.
RECOVER_EVERY_SECONDS = 30


# Every declared job kind has a schedule setting (ingest/jobkinds.py).
SCHEDULE = tuple(KINDS.values())


def interval(settings: Settings, kind: str) -> int:
    return int(getattr(settings, KINDS[kind].schedule_setting))


def period(settings: Settings, kind: str, now: float) -> int:
    """The period a run started at `now` belongs to: one run per kind and period."""
    return int(now // interval(settings, kind))


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "resume-jobs": {"task": "koala.resume_jobs", "schedule": float(RESUME_EVERY_SECONDS)},
        "recover-lost": {
            "task": "koala.recover_lost",
            "schedule": float(min(RECOVER_EVERY_SECONDS, max(1, settings.lost_after_seconds // 2))),
        },
    }
    for kind in SCHEDULE:
        every = interval(settings, kind.name)
        if every:
            out[kind.name] = {
                "task": "koala.scheduled",
                "schedule": float(every),
                "args": (kind.name,),
            }
    return out


def start_runs(conn: psycopg.Connection, settings: Settings, kind: str, now: float) -> list[int]:
    """Record this period's run(s) of a scheduled job and return the jobs to run: one run
    (one per project for `reprocess`), none if this period already has it. A run that finds
    the previous one still active is recorded as `skipped`."""
    every = interval(settings, kind)
    if not every:
        return []
    number = period(settings, kind, now)
    runs: list[tuple[int | None, dict[str, Any]]]
    if KINDS[kind].per_project:
        until = datetime.fromtimestamp(number * every, UTC)
        since = until - timedelta(hours=settings.reprocess_window_hours)
        rules = Rules.of(settings)
        runs = [
            (p.id, reprocessing.params(since, until, settings.reprocess_batch_size,
                                       reprocessing.project_rules(rules, p)))
            for p in projects.list_active(conn)
        ]  # fmt: skip
    else:
        with conn.transaction():
            runs = [(None, kinds.params_for(kind, conn, settings))]
    started = []
    for project_id, params in runs:
        try:
            started.append(jobs.create(conn, kind, project_id, params, "schedule", period=number))
        except jobs.AlreadyRan:
            log.info("%s already ran in period %d", kind, number)
        except jobs.JobConflict as conflict:
            log.warning("%s: run %d is still active; this period's run skipped", kind,
                        conflict.active_id, extra={"job": conflict.active_id})  # fmt: skip
            try:
                jobs.create(conn, kind, project_id, {"active_run": conflict.active_id},
                            "schedule", period=number, status="skipped")  # fmt: skip
            except (jobs.AlreadyRan, jobs.JobConflict):
                log.info("%s: period %d already recorded", kind, number)
    return started
