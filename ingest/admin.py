"""The admin API (`/admin/...`, Bearer ADMIN_TOKEN): what operators read.

It shares the receiver's process but not its hot path: queries run on a small synchronous
connection pool in Starlette's thread pool, through the same functions as the CLI
(`ingest.reports`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ingest import reports
from ingest.config import Settings
from ingest.store import projects, rejections
from ingest.store.projects import Project
from ingest.wire import WireError

MAX_LIMIT = 1000

Handler = Callable[[Request], Awaitable[Any]]


class Admin:
    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.blocked = frozenset(settings.blocked_identifiers)
        self.pool = ConnectionPool(
            settings.require_database_url(),
            min_size=0,
            max_size=4,
            open=False,
            kwargs={"autocommit": True},
        )
        self._opened = False

    def close(self) -> None:
        if self._opened:
            self.pool.close()

    def authorize(self, request: Request) -> None:
        token = self.settings.admin_token
        if token is None:
            raise WireError(401, "admin_disabled", "the admin API needs ADMIN_TOKEN to be set")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected):
            raise WireError(401, "invalid_token", "a valid Bearer token is required")

    def _run(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        if not self._opened:
            self.pool.open()
            self._opened = True
        with self.pool.connection() as conn:
            return work(conn)

    async def query(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        return await run_in_threadpool(self._run, work)

    async def project(self, request: Request) -> Project:
        name = request.path_params["name"]
        found = await self.query(lambda conn: projects.get_by_name(conn, name))
        if found is None:
            raise WireError(404, "unknown_project", f"no project named {name!r}")
        return found  # type: ignore[no-any-return]

    # --- endpoints --------------------------------------------------------------------

    async def stats(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        received = await self.redis.hget(
            reports.received_key(self.settings.redis_key_prefix), str(project.id)
        )
        out = await self.query(lambda conn: reports.stats(conn, project, int(received or 0)))
        out["queue_depth"] = int(await self.redis.llen(self.settings.queue_key))
        return out  # type: ignore[no-any-return]

    async def profiles(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        given = [
            (k, request.query_params[k]) for k in reports.LOOKUP_KINDS if k in request.query_params
        ]
        if len(given) != 1:
            raise WireError(
                400, "invalid_lookup", "give exactly one of " + ", ".join(reports.LOOKUP_KINDS)
            )
        kind, value = given[0]
        found = await self.query(
            lambda conn: reports.find_profiles(conn, project, kind, value, self.blocked)
        )
        return {"profiles": found}

    async def events(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        try:
            profile_id = int(request.path_params["profile_id"])
        except ValueError:
            raise WireError(404, "unknown_profile", "profile ids are numbers") from None
        limit = _limit(request, default=50)
        cursor = request.query_params.get("cursor")
        try:
            page = await self.query(
                lambda conn: reports.profile_events(conn, project, profile_id, limit, cursor)
            )
        except reports.BadCursor:
            raise WireError(400, "invalid_cursor", "the cursor is not one this API gave") from None
        if page is None:
            raise WireError(404, "unknown_profile", f"no profile {profile_id} in {project.name}")
        return page  # type: ignore[no-any-return]

    async def rejections(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        limit = _limit(request, default=100)
        rows = await self.query(lambda conn: rejections.recent(conn, project.id, limit))
        keys = ("id", "received_at", "source", "index", "code", "message", "payload")
        return {"rejections": [dict(zip(keys, row, strict=True)) for row in rows]}

    def routes(self, wrap: Callable[[str, Handler], Any]) -> list[Route]:
        def guarded(handler: Callable[[Request], Awaitable[dict[str, Any]]]) -> Handler:
            async def run(request: Request) -> dict[str, Any]:
                self.authorize(request)
                return await handler(request)

            return run

        base = "/admin/projects/{name}"
        return [
            Route(base + "/stats", wrap("admin", guarded(self.stats)), methods=["GET"]),
            Route(base + "/profiles", wrap("admin", guarded(self.profiles)), methods=["GET"]),
            Route(
                base + "/profiles/{profile_id}/events",
                wrap("admin", guarded(self.events)),
                methods=["GET"],
            ),
            Route(base + "/rejections", wrap("admin", guarded(self.rejections)), methods=["GET"]),
        ]


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise WireError(400, "invalid_limit", f"limit is a number from 1 to {MAX_LIMIT}")
    return int(raw)
