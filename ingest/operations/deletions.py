"""Deletions: Segment `delete` calls carried out, what each named and erased."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ingest.operations import paging
from ingest.operations.context import Ops
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
