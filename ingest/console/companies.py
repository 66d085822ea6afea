"""Companies: those active in a window ranked by activity or by one intent signal, and one
company with its days, visitors, signals and recent page views (the admin API's
/companies routes, the same operations)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.api.endpoint import MAX_ID
from ingest.console.app import Console
from ingest.console.lists import paged, params
from ingest.operations import companies
from ingest.operations.context import Ops
from ingest.operations.errors import NotFound

FILTERS = ("since", "until", "rank", "limit")


def routes(console: Console) -> list[BaseRoute]:
    ranked = paged("/console/companies", companies.ranked, companies.Query, *FILTERS)

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
