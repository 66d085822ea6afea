"""Dead letters: counts by reason and stage, the list filtered and paged, one letter (its
payload, error, traceback, history), correct and replay it, discard it; in bulk, a dry run
first, a confirm step, then the replay in parts of CHUNK with a progress bar.

Every action is one of ingest/operations/dead_letters.py's, as the API's and the CLI's:
the bulk replay's parts are `replay` with the page's filter, `limit` CHUNK and the
previous part's `last_id` as `after_id` (so a letter failing again meanwhile is not taken
twice in one run); the page's script posts them (dead_letters.js) and moves the bar.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ingest.console.app import Console
from ingest.console.lists import chosen_project, params, project_names, url
from ingest.operations import audit, dead_letters
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid

CHUNK = 100  # letters per part of a bulk replay: one request, one step of the bar
FILTERS = ("reason", "stage", "since", "until")
HISTORY = 100  # audit entries shown on a letter's page


def selection(given: dict[str, str]) -> dict[str, Any]:
    """The explicit selection a bulk action acts on: the page's filter, or, without one,
    `all` (every pending letter of the project, said so on the page); a confirmed action
    also carries the dry run's `last_id` as `up_to_id`, so it takes no letter that failed
    after the operator saw the count."""
    chosen: dict[str, Any] = {k: given[k] for k in FILTERS if given.get(k)} or {"all": True}
    bound = whole(given, "up_to_id")
    if bound is not None:
        chosen["up_to_id"] = bound
    return chosen


def payload_of(text: str) -> dict[str, Any]:
    """The corrected payload, checked again here (the page checked it before sending)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise Invalid("invalid_payload", f"the payload is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise Invalid("invalid_payload", "the payload must be a JSON object")
    return value


def whole(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise Invalid("invalid_request", f"{name}: a whole number")
    return int(text)


def routes(console: Console) -> list[BaseRoute]:
    def listing(request: Request) -> Any:
        def work(ops: Ops) -> dict[str, Any]:
            names = project_names(ops)
            project = chosen_project(request, names)
            filters = params(request, *FILTERS, "status", "limit")
            found = None
            if project is not None:
                query = dead_letters.Query.model_validate(
                    {**filters, "cursor": request.query_params.get("cursor") or None}
                )
                found = dead_letters.find(ops, project, query)
            status = filters.get("status", "pending")
            return {
                "projects": names,
                "project": project,
                "filters": filters,
                "state": status,
                "found": found,
                "total": sum(c.count for c in found.counts) if found else 0,
                "next_url": found
                and found.next
                and url("/console/dead-letters", project=project, **filters, cursor=found.next),
                "bulk": {k: v for k, v in filters.items() if k in FILTERS},
                "url": url,
            }

        return work

    def letter(request: Request) -> Any:
        letter_id = int(request.path_params["letter_id"])

        def work(ops: Ops) -> dict[str, Any]:
            project = request.query_params.get("project") or None
            shown = dead_letters.get(ops, project, letter_id)
            history = audit.list_entries(
                ops, HISTORY, None, project_name=shown.project, dead_letter=letter_id
            )
            return {
                "letter": shown,
                "project": shown.project,
                "payload": json.dumps(shown.payload, indent=2, ensure_ascii=False),
                "shared": json.dumps(shown.shared, indent=2, ensure_ascii=False)
                if shown.shared
                else None,
                "history": history.items,
                "acts": ops.actor.can_act and shown.status == "pending",
            }

        return work

    def bulk(request: Request) -> Any:
        """The dry run: what a bulk replay or discard of this filter would take."""

        def work(ops: Ops) -> dict[str, Any]:
            project = request.query_params.get("project", "")
            filters = params(request, *FILTERS)
            do = "discard" if request.query_params.get("do") == "discard" else "replay"
            chosen = selection(filters)
            dry = dead_letters.replay(
                ops,
                project,
                dead_letters.ReplayRequest.model_validate(
                    {**chosen, "dry_run": True, "limit": dead_letters.MAX_REPLAY}
                ),
            )
            return {
                "project": project,
                "filters": filters,
                "every": "all" in chosen,
                "do": do,
                "dry": dry,
                "chunk": CHUNK,
                "back": url("/console/dead-letters", project=project, **filters),
            }

        return work

    def replay_one(request: Request, form: dict[str, str]) -> Any:
        letter_id = int(request.path_params["letter_id"])

        def work(ops: Ops) -> str:
            project = form.get("project") or None
            corrected = payload_of(form["payload"]) if "payload" in form else None
            done = dead_letters.replay(
                ops,
                project,
                dead_letters.ReplayRequest(ids=[letter_id], payload=corrected),
            )
            said = (
                ("Corrected and replayed" if corrected is not None else "Replayed")
                if done.replayed
                else "Nothing replayed: the letter is no longer pending"
            )
            return url(f"/console/dead-letters/{letter_id}", project=project, done=said)

        return work

    def discard_one(request: Request, form: dict[str, str]) -> Any:
        letter_id = int(request.path_params["letter_id"])

        def work(ops: Ops) -> str:
            project = form.get("project") or None
            dead_letters.discard(ops, project, dead_letters.Selection(ids=[letter_id]))
            return url(f"/console/dead-letters/{letter_id}", project=project, done="Discarded")

        return work

    def replay_many(request: Request, form: dict[str, str]) -> Any:
        """One part of a bulk replay (JSON, for the page's script), or, from a browser
        without script, the whole of it at once."""
        wants_json = request.headers.get("accept", "").startswith("application/json")

        def work(ops: Ops) -> Any:
            project = form.get("project", "")
            chosen = selection(form)
            if wants_json:
                request_ = dead_letters.ReplayRequest.model_validate(
                    {
                        **chosen,
                        "limit": min(CHUNK, whole(form, "limit") or CHUNK),
                        "after_id": whole(form, "after_id"),
                    }
                )
                return JSONResponse(dead_letters.replay(ops, project, request_).model_dump(
                    mode="json", include={"matched", "replayed", "last_id"}
                ))  # fmt: skip
            done = dead_letters.replay(
                ops,
                project,
                dead_letters.ReplayRequest.model_validate(
                    {**chosen, "limit": dead_letters.MAX_REPLAY}
                ),
            )
            filters = {k: form[k] for k in FILTERS if form.get(k)}
            return url(
                "/console/dead-letters",
                project=project,
                **filters,
                done=f"Replayed {done.replayed} letters",
            )

        return work

    def discard_many(request: Request, form: dict[str, str]) -> Any:
        def work(ops: Ops) -> str:
            project = form.get("project", "")
            chosen = dead_letters.Selection.model_validate(selection(form))
            done = dead_letters.discard(ops, project, chosen)
            filters = {k: form[k] for k in FILTERS if form.get(k)}
            return url(
                "/console/dead-letters",
                project=project,
                **filters,
                done=f"Discarded {done.count} letters",
            )

        return work

    page = console.page
    return [
        Route("/console/dead-letters", page("dead_letters.html", listing), methods=["GET"]),
        Route("/console/dead-letters/bulk", page("dead_letters_bulk.html", bulk), methods=["GET"]),
        Route(
            "/console/dead-letters/{letter_id:int}",
            page("dead_letter.html", letter),
            methods=["GET"],
        ),
        Route(
            "/console/dead-letters/{letter_id:int}/replay",
            console.action(replay_one),
            methods=["POST"],
        ),
        Route(
            "/console/dead-letters/{letter_id:int}/discard",
            console.action(discard_one),
            methods=["POST"],
        ),
        Route("/console/dead-letters/replay", console.action(replay_many), methods=["POST"]),
        Route("/console/dead-letters/discard", console.action(discard_many), methods=["POST"]),
    ]
