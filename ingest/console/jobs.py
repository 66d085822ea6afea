"""Jobs: reprocessing and scheduled runs with their progress; start a reprocessing (a dry
run's count first, then a confirmation), cancel a run. A running job's progress moves on
the page without a reload (jobs.js polls `/console/jobs/{id}/progress`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ingest import jobkinds
from ingest.console.app import HEADERS, Console
from ingest.console.audit import utc
from ingest.operations import jobs, projects
from ingest.operations.context import Ops
from ingest.operations.sessions import Session

ACTIVE = ("queued", "running")
PAGE_SIZE = 50


def _optional(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


def _reprocess_request(form: dict[str, str], dry_run: bool) -> jobs.ReprocessRequest:
    batch = _optional(form.get("batch_size"))
    return jobs.ReprocessRequest.model_validate(
        {
            "since": form.get("since", ""),
            "until": form.get("until", ""),
            "batch_size": int(batch) if batch and batch.isdigit() else batch,
            "dry_run": dry_run,
        }
    )


def routes(console: Console) -> list[BaseRoute]:
    console.templates.env.filters["utc"] = utc

    def listing(request: Request) -> Any:
        kind = _optional(request.query_params.get("kind"))
        cursor = _optional(request.query_params.get("cursor"))

        def work(ops: Ops) -> dict[str, Any]:
            found = jobs.find(ops, jobs.Query(kind=kind, cursor=cursor, limit=PAGE_SIZE))
            names = (
                [p.name for p in projects.list_projects(ops, 1000).items]
                if ops.actor.can_act
                else []
            )
            more = urlencode({"kind": kind or "", "cursor": found.next}) if found.next else None
            return {
                "jobs": found.items,
                "next": more,
                "kind": kind,
                "kinds": jobkinds.NAMES,
                "projects": names,
                "default_batch_size": ops.settings.reprocess_batch_size,
                "active": ACTIVE,
            }

        return work

    def one(request: Request) -> Any:
        job_id = int(request.path_params["id"])
        return lambda ops: {"job": jobs.get(ops, job_id), "active": ACTIVE}

    async def progress(request: Request) -> Response:
        """One job as JSON: what the page's poll reads while the job runs."""
        job_id = int(request.path_params["id"])
        try:
            job, _ = await console.run(request, lambda ops: jobs.get(ops, job_id))
        except Exception as error:
            return console.failed(request, error)
        return JSONResponse(job.model_dump(mode="json"), headers=HEADERS)

    def reprocess(request: Request, form: dict[str, str]) -> Any:
        """First submit: a dry run, answered with the count and a form to confirm (the
        same fields, `confirm=1`). The confirmation starts it and goes to the job."""
        name = form.get("project", "")
        confirmed = form.get("confirm") == "1"

        def work(ops: Ops) -> Any:
            wanted = _reprocess_request(form, dry_run=not confirmed)
            started = jobs.start_reprocess(ops, name, wanted, "console")
            if confirmed:
                how = "resumed" if started.resumed else "started"
                return f"/console/jobs/{started.job_id}?" + urlencode(
                    {"done": f"Reprocessing of {name} {how} (job {started.job_id})"}
                )
            return console.render(
                request,
                "reprocess_confirm.html",
                Session(ops.actor, form.get("csrf", "")),
                project=name,
                request_=wanted,
                form=form,
                events=started.events,
            )

        return work

    def cancel(request: Request, form: dict[str, str]) -> Any:
        job_id = int(request.path_params["id"])

        def work(ops: Ops) -> str:
            done = jobs.cancel(ops, job_id)
            said = {
                "cancelled": "cancelled",
                "running": "stops at its next batch",
            }.get(done.status, f"was {done.status} already")
            return f"/console/jobs/{job_id}?" + urlencode({"done": f"Job {job_id} {said}"})

        return work

    return [
        Route("/console/jobs", console.page("jobs.html", listing), methods=["GET"]),
        Route("/console/jobs/reprocess", console.action(reprocess), methods=["POST"]),
        Route("/console/jobs/{id:int}", console.page("job.html", one), methods=["GET"]),
        Route("/console/jobs/{id:int}/progress", progress, methods=["GET"]),
        Route("/console/jobs/{id:int}/cancel", console.action(cancel), methods=["POST"]),
    ]
