"""Rejections: calls refused for their content, kept with their body, newest first."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.paging import Page
from ingest.store import rejections


class Rejection(BaseModel):
    id: int
    received_at: datetime
    source: str
    index: int | None = Field(description="The item's place in its request (None: all of it).")
    code: str
    message: str
    payload: str = Field(description="The refused item or request, as received.")


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def find(ops: Ops, name: str, query: Query) -> Page[Rejection]:
    project = ops.project(name)
    before = paging.decode("rejections", query.cursor, 1)
    rows = rejections.recent(
        ops.conn, project.id, query.limit + 1, int(before[0]) if before else None, query.code
    )
    found = paging.page("rejections", rows, query.limit, lambda r: [r["id"]])
    return Page[Rejection](
        items=[Rejection.model_validate(r) for r in found.items], next=found.next
    )
