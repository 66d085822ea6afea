"""Dead letters: find, read, correct, replay, discard, reset.

A replay or a discard acts on an explicit selection only: ids, a filter, or `all`. An
empty or mistyped request is refused rather than read as "every pending letter" (a
`{"id": 5}` typo once replayed a whole project). The dry run answers what would be
replayed, without claiming anything.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from ingest import replay as replaying
from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid, NotFound
from ingest.operations.paging import Page
from ingest.store import dead_letters, projects
from ingest.store.dead_letters import Filter
from ingest.store.projects import Project

Status = Literal["pending", "replaying", "replayed", "discarded"]
# Strict: a JSON body's `true` or `"5"` is not a count (pydantic's lax mode takes both)
LetterId = Annotated[int, Strict(), Field(ge=1, le=2**63 - 1)]
Count = Annotated[int, Strict()]
MAX_REPLAY = 1_000_000
PREVIEW = 20


class DeadLetter(BaseModel):
    id: int
    message_id: str | None
    source: str
    stage: str
    reason: str
    error: str
    attempts: int
    replays: int
    status: Status
    first_failed_at: datetime
    last_failed_at: datetime
    replayed_at: datetime | None
    payload: dict[str, Any]


class DeadLetterDetail(DeadLetter):
    project: str
    traceback: str | None
    shared: dict[str, Any] | None
    received_at: datetime | None
    edited_at: datetime | None


class ReasonCount(BaseModel):
    reason: str
    stage: str
    count: int


class DeadLetterPage(Page[DeadLetter]):
    counts: list[ReasonCount] = Field(description="Every letter the filter matches, by reason.")


class Query(BaseModel):
    """A filter of a list (query string of `GET .../dead-letters`)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=200)
    stage: str | None = Field(default=None, max_length=200)
    status: Status | Literal["all"] = "pending"
    since: datetime | None = Field(default=None, description="Last failed at or after (ISO-8601).")
    until: datetime | None = Field(default=None, description="Last failed before (ISO-8601).")
    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


class Selection(BaseModel):
    """Which pending letters: `ids`, a filter (`reason`, `stage`, `since`, `until`), or
    `"all": true`. One of the three is required."""

    model_config = ConfigDict(extra="forbid")

    ids: list[LetterId] | None = Field(default=None, min_length=1, max_length=10_000)
    reason: str | None = Field(default=None, max_length=200)
    stage: str | None = Field(default=None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None
    all: bool = Field(default=False, description="Every pending letter of the project.")
    up_to_id: LetterId | None = Field(
        default=None,
        description="Only letters up to this id: a dry run's `last_id`, so that the run an"
        " operator confirms acts on the letters the dry run counted, not on letters that"
        " failed since.",
    )

    @model_validator(mode="after")
    def explicit(self) -> Selection:
        filtered = any(v is not None for v in (self.reason, self.stage, self.since, self.until))
        if not (self.ids or filtered or self.all):
            raise ValueError('give ids, a filter (reason, stage, since, until) or "all": true')
        if self.all and (self.ids or filtered):
            raise ValueError('"all": true goes alone, without ids or a filter')
        return self

    def described(self) -> dict[str, Any]:
        """What the audit log keeps of the selection: never a corrected payload (it holds a
        person's data; the letter row keeps it, and a deletion erases it there)."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude={"payload"})


class ReplayRequest(Selection):
    dry_run: bool = Field(
        default=False, description="Answer what would be replayed; change nothing."
    )
    limit: Count = Field(
        default=10_000, ge=1, le=MAX_REPLAY, description="At most this many letters."
    )
    payload: dict[str, Any] | None = Field(
        default=None,
        description="A corrected payload, with exactly one id: written, then replayed.",
    )
    after_id: LetterId | None = Field(
        default=None,
        description="Only letters after this id: a replay run in parts (the console's"
        " progress bar) gives each part the previous one's `last_id`, so a letter that"
        " failed again meanwhile is not taken twice in one run.",
    )

    @model_validator(mode="after")
    def one_payload(self) -> ReplayRequest:
        if self.payload is not None and (self.ids is None or len(self.ids) != 1):
            raise ValueError("a corrected payload goes with exactly one id")
        return self


class ReplayOutcome(BaseModel):
    matched: int = Field(description="Pending letters the selection matched (up to limit).")
    replayed: int
    dry_run: bool
    preview: list[DeadLetter] = Field(
        default=[], description=f"In a dry run, the first {PREVIEW} letters that would be replayed."
    )
    last_id: int | None = Field(
        default=None,
        description="The highest id replayed: `after_id` for the next part. In a dry run,"
        " the highest id it counted: `up_to_id` for the run that confirms it.",
    )


class ResetRequest(BaseModel):
    """Letters stuck in `replaying` (their replay message lost) back to `pending`."""

    model_config = ConfigDict(extra="forbid")

    ids: list[LetterId] | None = Field(default=None, min_length=1, max_length=10_000)
    all: bool = False
    older_than_seconds: Count | None = Field(
        default=None, ge=0, description="Only letters whose replay was sent this long ago."
    )

    @model_validator(mode="after")
    def explicit(self) -> ResetRequest:
        if bool(self.ids) == self.all:
            raise ValueError('give ids or "all": true')
        return self


class Changed(BaseModel):
    count: int


def _scope(ops: Ops, name: str | None, acting: bool) -> Project | None:
    """The project named, or None for every project (the CLI's `dlq` without --project:
    only for an actor of every project)."""
    if name is not None:
        return ops.acting_on(name) if acting else ops.project(name)
    if acting:
        ops.actor.check_acts(None)
    elif not ops.actor.everywhere:
        raise Invalid("project_required", "name a project")
    return None


def _filter(project: Project | None, query: Query | Selection, status: str | None) -> Filter:
    after = query.after_id if isinstance(query, ReplayRequest) else None
    return Filter(
        project_id=project.id if project else None,
        reason=query.reason,
        stage=query.stage,
        status=status,
        since=query.since,
        until=query.until,
        ids=tuple(query.ids) if isinstance(query, Selection) and query.ids else None,
        after_id=after,
        up_to_id=query.up_to_id if isinstance(query, Selection) else None,
    )


def find(ops: Ops, name: str | None, query: Query) -> DeadLetterPage:
    project = _scope(ops, name, acting=False)
    selection = _filter(project, query, None if query.status == "all" else query.status)
    after = paging.decode("dead_letters", query.cursor, 1)
    rows = dead_letters.find(
        ops.conn,
        dataclasses.replace(selection, after_id=int(after[0])) if after else selection,
        query.limit + 1,
    )
    found = paging.page("dead_letters", rows, query.limit, lambda r: [r["id"]])
    counts = dead_letters.counts_by_reason_and_stage(ops.conn, selection)
    return DeadLetterPage(
        items=[DeadLetter.model_validate(r) for r in found.items],
        next=found.next,
        counts=[ReasonCount(reason=r, stage=s, count=n) for r, s, n in counts],
    )


def get(ops: Ops, name: str | None, letter_id: int) -> DeadLetterDetail:
    project = _scope(ops, name, acting=False)
    letter = dead_letters.get(ops.conn, letter_id)
    if letter is None or (project is not None and letter["project_id"] != project.id):
        raise NotFound("unknown_dead_letter", f"no dead letter {letter_id}")
    owner = project.name if project else projects.name_of(ops.conn, letter["project_id"])
    return DeadLetterDetail.model_validate({**letter, "project": owner})


def replay(ops: Ops, name: str | None, request: ReplayRequest) -> ReplayOutcome:
    """Send the selected pending letters through the pipeline again (ingest/replay.py)."""
    project = _scope(ops, name, acting=not request.dry_run)
    selection = _filter(project, request, "pending")
    if request.dry_run:
        matched = sum(n for _, _, n in dead_letters.counts_by_reason_and_stage(ops.conn, selection))
        preview = dead_letters.find(ops.conn, selection, PREVIEW)
        return ReplayOutcome(
            matched=min(matched, request.limit),
            replayed=0,
            dry_run=True,
            preview=[DeadLetter.model_validate(r) for r in preview],
            last_id=dead_letters.last_id(ops.conn, selection, request.limit),
        )
    if request.payload is not None:
        assert request.ids is not None
        if not dead_letters.edit_payload(ops.conn, request.ids[0], request.payload):
            raise NotFound("unknown_dead_letter", f"no pending dead letter {request.ids[0]}")
    done = replaying.replay(ops.conn, ops.redis, ops.settings, selection, limit=request.limit)
    ops.record(
        "dead_letters.replay",
        project,
        {**request.described(), "payload_corrected": request.payload is not None},
        done.replayed,
    )
    return ReplayOutcome(
        matched=done.matched, replayed=done.replayed, dry_run=False, last_id=done.last_id
    )


def replay_with_progress(
    ops: Ops, name: str | None, request: ReplayRequest, rate: float | None, progress: Any
) -> ReplayOutcome:
    """The CLI's replay: the same, paced at `rate` calls a second, reporting progress."""
    project = _scope(ops, name, acting=True)
    selection = _filter(project, request, "pending")
    done = replaying.replay(
        ops.conn, ops.redis, ops.settings, selection, limit=request.limit, rate=rate,
        progress=progress,
    )  # fmt: skip
    ops.record("dead_letters.replay", project, request.described(), done.replayed)
    return ReplayOutcome(matched=done.matched, replayed=done.replayed, dry_run=False)


def discard(ops: Ops, name: str | None, selection: Selection) -> Changed:
    project = _scope(ops, name, acting=True)
    count = dead_letters.discard(ops.conn, _filter(project, selection, "pending"))
    if selection.ids and not count:
        raise NotFound("unknown_dead_letter", "no pending dead letter with those ids")
    ops.record("dead_letters.discard", project, selection.described(), count)
    return Changed(count=count)


def reset(ops: Ops, name: str | None, request: ResetRequest) -> Changed:
    project = _scope(ops, name, acting=True)
    sent_before = (
        datetime.now(UTC) - timedelta(seconds=request.older_than_seconds)
        if request.older_than_seconds
        else None
    )
    selection = Filter(
        project_id=project.id if project else None,
        ids=tuple(request.ids) if request.ids else None,
        status=None,
    )
    count = dead_letters.release(ops.conn, selection, sent_before)
    ops.record("dead_letters.reset", project, request.model_dump(exclude_defaults=True), count)
    return Changed(count=count)
