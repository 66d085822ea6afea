"""The live debugger: a project's most recent calls as they arrive, each with its outcome
(ingest/operations/debugger.py), streamed to the page with server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ingest.console.app import HEADERS, Console
from ingest.console.profiles import project_names
from ingest.operations import debugger
from ingest.operations.context import Ops

POLL_SECONDS = 1.0
FIRST = 50  # calls the page opens with


def routes(console: Console) -> list[BaseRoute]:
    def page(request: Request) -> Any:
        name = request.query_params.get("project", "")

        def work(ops: Ops) -> dict[str, Any]:
            names = project_names(ops)
            recent = None
            if name:
                recent = debugger.recent(ops, name, debugger.Query(limit=FIRST))
            elif names:
                recent = debugger.recent(ops, names[0], debugger.Query(limit=FIRST))
            return {"projects": names, "recent": recent}

        return work

    async def stream(request: Request) -> Response:
        """Server-sent events: the calls that arrived since `after`, polled every
        POLL_SECONDS (one XRANGE) while the page is open; ends with the session."""
        name = request.query_params.get("project", "")
        after = request.query_params.get("after") or None

        def poll(since: str | None) -> Any:
            return lambda ops: debugger.recent(ops, name, debugger.Query(after=since))

        try:
            first, _ = await console.run(request, poll(after))
        except Exception as error:
            return console.failed(request, error)

        async def events() -> AsyncIterator[str]:
            current: debugger.Recent = first
            yield ": open\n\n"
            while True:
                if current.calls:
                    calls = [c.model_dump(mode="json") for c in current.calls]
                    data = orjson.dumps({"calls": calls, "last": current.last}).decode()
                    yield f"data: {data}\n\n"
                await asyncio.sleep(POLL_SECONDS)
                if await request.is_disconnected():
                    return
                try:
                    current, _ = await console.run(request, poll(current.last))
                except Exception:
                    yield "event: end\ndata: {}\n\n"
                    return

        return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)

    return [
        Route("/console/debugger", console.page("debugger.html", page), methods=["GET"]),
        Route("/console/debugger/stream", stream, methods=["GET"]),
    ]
