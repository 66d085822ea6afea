"""Deletions: Segment `delete` calls carried out, what each named and erased; and the
suppressions they hold (Segment's "delete and suppress"): for KOALA_SUPPRESS_DAYS after a
deletion, later calls naming its identifiers are refused as `suppressed`
(workers/pipeline.py). An operator may lift a suppression early (audited)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import NotFound
from ingest.operations.paging import Page
from ingest.store import deletions


class Deletion(BaseModel):
    id: int
    message_id: str | None
    identifiers: list[str]
    received_at: datetime | None
    deleted_at: datetime
    profiles: int
    events: int
    identities: int
    dead_letters: int
    rejections: int
    lifted_at: datetime | None = Field(
        default=None, description="When an operator lifted its suppression (null: not)."
    )
    lifted_by: str | None = None


class Suppression(BaseModel):
    id: int = Field(description="The deletion's id (lift it with this).")
    message_id: str | None
    identifiers: list[str] = Field(description="`kind:value`: calls naming one are refused.")
    deleted_at: datetime
    until: datetime = Field(description="When it ends (KOALA_SUPPRESS_DAYS after).")


class Lifted(BaseModel):
    id: int
    identifiers: list[str]
    deleted_at: datetime
    lifted_at: datetime
    lifted_by: str


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def find(ops: Ops, name: str, query: Query) -> Page[Deletion]:
    project = ops.project(name)
    before = paging.decode("deletions", query.cursor, 1)
    rows = deletions.list_recent(
        ops.conn, project.id, query.limit + 1, int(before[0]) if before else None
    )
    found = paging.page("deletions", rows, query.limit, lambda r: [r["id"]])
    return Page[Deletion](items=[Deletion.model_validate(r) for r in found.items], next=found.next)


def list_suppressions(ops: Ops, name: str, query: Query) -> Page[Suppression]:
    """Deletions suppressing calls now, newest first (none when KOALA_SUPPRESS_DAYS is 0)."""
    project = ops.project(name)
    days = ops.settings.suppress_days
    if days <= 0:
        return Page[Suppression](items=[], next=None)
    before = paging.decode("suppressions", query.cursor, 1)
    rows = deletions.suppressions(
        ops.conn, project.id, days, query.limit + 1, int(before[0]) if before else None
    )
    found = paging.page("suppressions", rows, query.limit, lambda r: [r["id"]])
    return Page[Suppression](
        items=[Suppression.model_validate(r) for r in found.items], next=found.next
    )


def lift(ops: Ops, name: str, deletion_id: int) -> Lifted:
    """Stop the suppression of a deletion from now on: calls naming its identifiers are
    taken again (within a batch's time). The deletion's record stays."""
    project = ops.acting_on(name)
    with ops.conn.transaction():
        row = deletions.lift(ops.conn, project.id, deletion_id, ops.actor.name)
        if row is None:
            raise NotFound(
                "unknown_suppression",
                f"{name} has no deletion {deletion_id} whose suppression is not lifted",
            )
        ops.record(
            "deletion.lift_suppression",
            project,
            {"deletion": deletion_id, "identifiers": len(row["identifiers"])},
            1,
        )
    return Lifted.model_validate(row)
