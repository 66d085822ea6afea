"""Companies: those active in a window ranked by activity or by one intent signal, and one
company with its days, visitors, signals and recent page views (the admin API's
/companies routes, the same operations)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.api.endpoint import MAX_ID
from ingest.console.app import Console
from ingest.console.lists import chosen_project, params, project_names, url
from ingest.operations import companies
from ingest.operations.context import Ops
from ingest.operations.errors import NotFound

FILTERS = ("since", "until", "rank", "limit")


def routes(console: Console) -> list[BaseRoute]:
    def ranked(request: Request) -> Any:
        def work(ops: Ops) -> dict[str, Any]:
            names = project_names(ops)
            project = chosen_project(request, names)
            filters = params(request, *FILTERS)
            found = None
            if project is not None:
                query = companies.Query.model_validate(
                    {**filters, "cursor": request.query_params.get("cursor") or None}
                )
                found = companies.ranked(ops, project, query)
            return {
                "projects": names,
                "project": project,
                "filters": filters,
                "found": found,
                "next_url": found
                and found.next
                and url("/console/companies", project=project, **filters, cursor=found.next),
            }

        return work

    def company(request: Request) -> Any:
        name = request.query_params.get("project", "")
        company_id = int(request.path_params["id"])
        filters = params(request, "since", "until")

        def work(ops: Ops) -> dict[str, Any]:
            if company_id > MAX_ID:
                ops.project(name)
                raise NotFound("unknown_company", f"no company {company_id} in {name}")
            window = companies.Window.model_validate(filters)
            return {
                "project": name,
                "filters": filters,
                "c": companies.detail(ops, name, company_id, window),
            }

        return work

    return [
        Route("/console/companies", console.page("companies.html", ranked), methods=["GET"]),
        Route(
            "/console/companies/{id:int}",
            console.page("company.html", company),
            methods=["GET"],
        ),
    ]
