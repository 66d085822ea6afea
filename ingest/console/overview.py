"""Overview: every project reconciled live, calls per minute, queue, breaker, workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ingest.console.app import HEADERS, Console
from ingest.operations import breaker, overview

STREAM_SECONDS = 2.0


def routes(console: Console) -> list[BaseRoute]:
    def data(request: Request) -> Any:
        return lambda ops: {"data": overview.overview(ops)}

    async def stream(request: Request) -> Response:
        """Server-sent events: the overview every STREAM_SECONDS while the page is open;
        the stream ends when the session does (signed out, token revoked)."""
        try:
            first, _ = await console.run(request, overview.overview)
        except Exception as error:
            return console.failed(request, error)

        async def events() -> AsyncIterator[str]:
            current: Any = first
            while True:
                yield f"data: {current.model_dump_json()}\n\n"
                await asyncio.sleep(STREAM_SECONDS)
                if await request.is_disconnected():
                    return
                try:
                    current, _ = await console.run(request, overview.overview)
                except Exception:
                    yield "event: end\ndata: {}\n\n"
                    return

        return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)

    def reset_breaker(request: Request, form: dict[str, str]) -> Any:
        def work(ops: Any) -> str:
            breaker.reset(ops)
            return "/console?done=Breaker+closed"

        return work

    return [
        Route("/console", console.page("overview.html", data), methods=["GET"]),
        Route("/console/breaker/reset", console.action(reset_breaker), methods=["POST"]),
        Route("/console/overview/stream", stream, methods=["GET"]),
    ]
