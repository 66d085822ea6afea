"""The audit log: who changed what, newest first, filtered by project and action, paged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.console.app import Console
from ingest.operations import audit, projects
from ingest.operations.context import Ops

PAGE_SIZE = 100


def _optional(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


def utc(at: datetime | None) -> str:
    """A time as these pages show it: UTC, to the second (whatever the database's zone)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if at else ""


def routes(console: Console) -> list[BaseRoute]:
    console.templates.env.filters["utc"] = utc

    def listing(request: Request) -> Any:
        project = _optional(request.query_params.get("project"))
        action = _optional(request.query_params.get("action"))
        cursor = _optional(request.query_params.get("cursor"))

        def work(ops: Ops) -> dict[str, Any]:
            found = audit.list_entries(ops, PAGE_SIZE, cursor, project, action)
            more = None
            if found.next:
                wanted = {"project": project or "", "action": action or "", "cursor": found.next}
                more = urlencode(wanted)
            return {
                "entries": found.items,
                "next": more,
                "project": project,
                "action": action,
                "projects": [p.name for p in projects.list_projects(ops, 1000).items],
            }

        return work

    return [Route("/console/audit", console.page("audit.html", listing), methods=["GET"])]
