"""Jobs: reprocessing and scheduled runs: list, read, start a reprocessing, cancel."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from ingest import jobkinds, reprocessing
from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Conflict, Invalid, NotFound
from ingest.operations.paging import Page
from ingest.store import events, jobs, projects
from ingest.store.projects import Project

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted", "skipped"]
# who started a run: an operator's shell, a script on the admin API, the console, or beat
Trigger = Literal["cli", "api", "console", "schedule"]


class Job(BaseModel):
    id: int
    kind: str
    project: str | None
    params: dict[str, Any]
    trigger: Trigger
    period: int | None
    status: str
    done: int
    total: int | None
    counts: dict[str, int]
    errors: list[Any]
    cursor: Any
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str | None = Field(default=None, description="One of " + ", ".join(jobkinds.NAMES) + ".")
    limit: int = Field(default=50, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def known_kind(self) -> Query:
        if self.kind is not None and self.kind not in jobkinds.NAMES:
            raise ValueError("kind is one of " + ", ".join(jobkinds.NAMES))
        return self


class ReprocessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="From this event time (ISO-8601; UTC if no offset).")
    until: datetime = Field(description="Up to this event time, excluded.")
    batch_size: Annotated[int, Strict()] | None = Field(
        default=None, ge=1, le=50_000, description="Events per transaction."
    )
    restart: bool = Field(
        default=False, description="Start over instead of resuming an unfinished run."
    )
    dry_run: bool = Field(
        default=False, description="Answer how many events the range holds; start nothing."
    )


class Started(BaseModel):
    job_id: int | None
    resumed: bool = False
    dry_run: bool = False
    events: int | None = Field(default=None, description="In a dry run: the events in the range.")


class Cancelled(BaseModel):
    job_id: int
    status: str
    cancel_requested: bool = True


def _visible(ops: Ops, row: dict[str, Any] | None, job_id: int) -> dict[str, Any]:
    if row is None or (
        not ops.actor.everywhere
        and (row["project_id"] is None or not ops.actor.sees(row["project_id"]))
    ):
        raise NotFound("unknown_job", f"no job {job_id}")
    return row


def find(ops: Ops, query: Query) -> Page[Job]:
    before = paging.decode("jobs", query.cursor, 1)
    scope = None if ops.actor.projects is None else sorted(ops.actor.projects)
    rows = jobs.recent(
        ops.conn, query.kind, query.limit + 1, int(before[0]) if before else None, scope
    )
    found = paging.page("jobs", rows, query.limit, lambda r: [r["id"]])
    return Page[Job](items=[Job.model_validate(r) for r in found.items], next=found.next)


def get(ops: Ops, job_id: int) -> Job:
    return Job.model_validate(_visible(ops, jobs.get(ops.conn, job_id), job_id))


def cancel(ops: Ops, job_id: int) -> Cancelled:
    row = _visible(ops, jobs.get(ops.conn, job_id), job_id)
    ops.actor.check_acts(row["project_id"])
    status = jobs.cancel(ops.conn, job_id)
    if status is None:
        raise NotFound("unknown_job", f"no job {job_id}")
    # under the job's project, so an actor limited to it sees its own cancels
    project = projects.get_by_name(ops.conn, row["project"]) if row["project"] else None
    ops.record("job.cancel", project, {"job_id": job_id, "kind": row["kind"]}, 1)
    return Cancelled(job_id=job_id, status=status)


def params_of(ops: Ops, request: ReprocessRequest, project: Project) -> dict[str, Any]:
    since, until = (reprocessing.as_utc(t) for t in (request.since, request.until))
    rules = reprocessing.project_rules(ops.rules, project)
    try:
        return reprocessing.params(
            since, until, request.batch_size or ops.settings.reprocess_batch_size, rules
        )
    except ValueError as error:
        raise Invalid("invalid_range", f"since/until: {error}") from None


def start_reprocess(
    ops: Ops, name: str, request: ReprocessRequest, trigger: Trigger, queue: bool = True
) -> Started:
    """Record a reprocessing of the project's range (an unfinished run of the same range
    resumes) and, with `queue`, hand it to the workers. A dry run counts the events."""
    if request.dry_run:
        project = ops.project(name)
        params = params_of(ops, request, project)
        count = events.count_in_range(
            ops.conn, project.id, reprocessing.as_utc(request.since),
            reprocessing.as_utc(request.until),
        )  # fmt: skip
        return Started(job_id=None, dry_run=True, events=count)
    project = ops.acting_on(name)
    params = params_of(ops, request, project)
    try:
        job_id, resumed = reprocessing.start(
            ops.conn, project.id, params, trigger, restart=request.restart
        )
    except jobs.JobConflict as conflict:
        raise Conflict(
            "job_active", f"job {conflict.active_id} is reprocessing {name} already"
        ) from None
    ops.record(
        "job.reprocess",
        project,
        {**request.model_dump(mode="json", exclude_defaults=True), "job_id": job_id},
        None,
    )
    if queue:
        try:
            reprocessing.enqueue(ops.redis, ops.settings, job_id)
        except redis.RedisError as error:
            # the job is recorded: the beat's sweep of stalled jobs starts it later
            log.warning("job %d recorded but not queued (%s): the sweep starts it", job_id, error)
    return Started(job_id=job_id, resumed=resumed)
