"""The audit log: every action that changed something, newest first.

Written by `Ops.record` (ingest/operations/context.py) from each operation that acts;
read here. Any actor may read it, viewers included; an actor limited to some projects
sees only the entries of those projects, and not those that span every project (token
changes, the breaker), which may name other projects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid
from ingest.operations.paging import Page
from ingest.store import audit


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description='Who: "admin-token", "token:NAME", "cli:USER".')
    action: str = Field(description='What: "dead_letters.replay", "token.create", ...')
    project: str | None = Field(description="The project acted on; null: every project.")
    selection: dict[str, Any] = Field(description="What the action was given.")
    count: int | None = Field(description="How many letters or rows it changed.")


class Query(BaseModel):
    """A filter of the audit log (the query string of its listing)."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, max_length=200)
    action: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def list_entries(
    ops: Ops,
    limit: int,
    cursor: str | None,
    project_name: str | None = None,
    action: str | None = None,
    dead_letter: int | None = None,
) -> Page[AuditEntry]:
    """A page of entries, newest first: of one project when named, of the actor's
    projects when it is limited, else all; with `dead_letter`, only the replays and
    discards that named that letter's id (its history; one made by a filter names none)."""
    _check_limit(limit)
    if project_name is not None:
        scope: list[int] | None = [ops.project(project_name).id]
    elif ops.actor.projects is not None:
        scope = sorted(ops.actor.projects)
    else:
        scope = None
    before = paging.decode("audit", cursor, 1)
    rows = audit.page(
        ops.conn, scope, int(before[0]) if before else None, limit + 1, action, dead_letter
    )
    found = paging.page("audit", rows, limit, lambda r: [r["id"]])
    return Page[AuditEntry](
        items=[AuditEntry.model_validate(r) for r in found.items], next=found.next
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= paging.MAX_LIMIT:
        raise Invalid("invalid_limit", f"limit is 1 to {paging.MAX_LIMIT}")
