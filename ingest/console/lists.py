"""Rejections and deletions: a project's tables, filtered and paged with the one cursor.

Also what the list pages share: the paged list (`paged`), the project picker (the projects
this actor sees) and the reading of a query string (an empty field is no filter).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.console.app import Console
from ingest.operations import deletions, paging, rejections
from ingest.operations import projects as projects_ops
from ingest.operations.context import Ops


def project_names(ops: Ops) -> list[str]:
    """Every active project this actor sees, for the picker (followed to the last page)."""
    names: list[str] = []
    cursor: str | None = None
    while True:
        found = projects_ops.list_projects(ops, paging.MAX_LIMIT, cursor)
        names += [p.name for p in found.items]
        if found.next is None:
            return names
        cursor = found.next


def params(request: Request, *names: str) -> dict[str, str]:
    """The named query parameters that are given and not empty."""
    out = {}
    for name in names:
        value = request.query_params.get(name, "").strip()
        if value:
            out[name] = value
    return out


def chosen_project(request: Request, names: list[str]) -> str | None:
    """The project of the query string; else the only one this actor sees; else none."""
    named = request.query_params.get("project", "").strip()
    if named:
        return named
    return names[0] if len(names) == 1 else None


def url(path: str, **query: Any) -> str:
    given = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(given)}" if given else path


def paged(path: str, find: Any, query_model: Any, *filter_names: str) -> Any:
    """A project's list page, filtered by `filter_names` and paged with the API's cursor:
    `find(ops, project, query)` is the operation, `query_model` its query."""

    def page(request: Request) -> Any:
        def work(ops: Ops) -> dict[str, Any]:
            names = project_names(ops)
            project = chosen_project(request, names)
            filters = params(request, *filter_names)
            found = None
            if project is not None:
                query = query_model.model_validate(
                    {**filters, "cursor": request.query_params.get("cursor") or None}
                )
                found = find(ops, project, query)
            return {
                "projects": names,
                "project": project,
                "filters": filters,
                "found": found,
                "next_url": found
                and found.next
                and url(path, project=project, **filters, cursor=found.next),
            }

        return work

    return page


def routes(console: Console) -> list[BaseRoute]:
    rejections_page = paged(
        "/console/rejections", rejections.find, rejections.Query, "code", "limit"
    )
    deletions_page = paged("/console/deletions", deletions.find, deletions.Query, "limit")

    return [
        Route(
            "/console/rejections", console.page("rejections.html", rejections_page), methods=["GET"]
        ),
        Route(
            "/console/deletions", console.page("deletions.html", deletions_page), methods=["GET"]
        ),
    ]
