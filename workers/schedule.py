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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest.config import Settings
from ingest.store import jobs, projects

log = logging.getLogger(__name__)

# The sweep that hands stalled jobs (a lost continuation, a killed runner) to a worker.
RESUME_EVERY_SECONDS = 60
# The sweep that queues again the batches a killed worker held or lost
# (workers/recovery.py): twice per KOALA_LOST_AFTER_SECONDS, so a batch waits at most 1.5 x
# that after its holder died (30 s with the defaults); at most every 30 s.
RECOVER_EVERY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Scheduled:
    kind: str
    setting: str  # the Settings field holding the interval in seconds
    what: str


SCHEDULE = (
    Scheduled(
        "auto_replay",
        "schedule_auto_replay_seconds",
        "replay dead letters whose failure was transient (budget, maximum age)",
    ),
    Scheduled(
        "expire",
        "schedule_expire_seconds",
        "expire dedup keys past the window, and data past the retention",
    ),
    Scheduled(
        "reprocess",
        "schedule_reprocess_seconds",
        "reprocess each project's last `KOALA_REPROCESS_WINDOW_HOURS` with today's rules",
    ),
    Scheduled(
        "identity_check",
        "schedule_identity_check_seconds",
        "merge profiles that share an identifier, through the guarded merge",
    ),
)


def interval(settings: Settings, kind: str) -> int:
    for entry in SCHEDULE:
        if entry.kind == kind:
            return int(getattr(settings, entry.setting))
    raise KeyError(kind)


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
    for entry in SCHEDULE:
        every = interval(settings, entry.kind)
        if every:
            out[entry.kind] = {
                "task": "koala.scheduled",
                "schedule": float(every),
                "args": (entry.kind,),
            }
    return out


def start_runs(conn: psycopg.Connection, settings: Settings, kind: str, now: float) -> list[int]:
    """Record this period's run(s) of a scheduled job and return the jobs to run: one run
    (one per project for `reprocess`), none if this period already has it. A run that finds
    the previous one still active is recorded as `skipped`."""
    from workers import maintenance
    from workers.jobs import ReprocessJob
    from workers.normalize import Rules

    every = interval(settings, kind)
    if not every:
        return []
    number = period(settings, kind, now)
    runs: list[tuple[int | None, dict[str, Any]]]
    if kind == "reprocess":
        until = datetime.fromtimestamp(number * every, UTC)
        since = until - timedelta(hours=settings.reprocess_window_hours)
        params = ReprocessJob.params(
            since, until, settings.reprocess_batch_size, Rules.of(settings)
        )
        runs = [(p.id, params) for p in projects.list_active(conn)]
    else:
        with conn.transaction():
            runs = [(None, maintenance.params_for(kind, conn, settings))]
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
