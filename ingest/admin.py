"""The admin API (`/admin/...`, Bearer ADMIN_TOKEN): what operators read.

It shares the receiver's process but not its hot path: queries run on a small synchronous
connection pool in Starlette's thread pool, through the same functions as the CLI
(`ingest.reports`).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
import psycopg
import redis.asyncio as aioredis
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ingest import cors, jobkinds, redis_clients, reports, reprocessing
from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.replay import replay as replay_letters
from ingest.store import dead_letters, deletions, jobs, projects, rejections
from ingest.store.projects import Project
from ingest.wire import NUL_ESCAPE, WireError, has_nul

MAX_LIMIT = 1000

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Any]]


class Admin:
    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.rules = Rules.of(settings)
        self.pool = ConnectionPool(
            settings.require_database_url(),
            min_size=0,
            max_size=4,
            open=False,
            kwargs={"autocommit": True, **settings.connection_options},
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
            lambda conn: reports.find_profiles(conn, project, kind, value, self.rules)
        )
        return {"profiles": found}

    async def events(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        profile_id = _number(request.path_params["profile_id"])
        if profile_id is None:
            raise WireError(404, "unknown_profile", "profile ids are numbers")
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

    async def deletions(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        limit = _limit(request, default=100)
        rows = await self.query(lambda conn: deletions.list_recent(conn, project.id, limit))
        return {"deletions": rows}

    # --- dead letters -------------------------------------------------------------------

    def _filter(self, project: Project, source: Any) -> dead_letters.Filter:
        def when(name: str) -> datetime | None:
            raw = source.get(name)
            if not raw:
                return None
            try:
                return datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            except ValueError:
                raise WireError(400, "invalid_time", f"{name} is not an ISO-8601 time") from None

        ids = source.get("ids")
        if ids is not None and (
            not isinstance(ids, list) or not all(_count(i) and 0 < i <= MAX_ID for i in ids)
        ):
            raise WireError(400, "invalid_ids", "ids is a list of dead letter ids")
        return dead_letters.Filter(
            project_id=project.id,
            reason=source.get("reason") or None,
            status=source.get("status", "pending") or None,
            since=when("since"),
            until=when("until"),
            ids=tuple(ids) if ids is not None else None,
        )

    async def dead_letters(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        selection = self._filter(project, request.query_params)
        limit = _limit(request, default=100)

        def read(conn: psycopg.Connection) -> dict[str, Any]:
            return {
                "dead_letters": dead_letters.find(conn, selection, limit),
                "counts": dead_letters.counts_by_reason(conn, selection),
            }

        return await self.query(read)  # type: ignore[no-any-return]

    async def dead_letter(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        letter = await self.query(lambda conn: dead_letters.get(conn, _id(request)))
        if letter is None or letter["project_id"] != project.id:
            raise WireError(404, "unknown_dead_letter", "no such dead letter in this project")
        return letter  # type: ignore[no-any-return]

    async def replay(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        body = await _json_object(request)
        selection = self._filter(project, {**body, "status": "pending"})
        dry_run = bool(body.get("dry_run"))
        limit = body.get("limit")
        if limit is None:
            limit = 10_000
        # `int()` of -5, "abc" or [1] answered 500 (issue #13)
        if not _count(limit) or not 1 <= limit <= MAX_REPLAY:
            raise WireError(400, "invalid_limit", f"limit is a number from 1 to {MAX_REPLAY}")
        payload = body.get("payload")
        if payload is not None and (selection.ids is None or len(selection.ids) != 1):
            raise WireError(400, "invalid_payload", "a corrected payload goes with one id")

        def run(conn: psycopg.Connection) -> dict[str, Any]:
            if payload is not None and not dry_run:
                assert selection.ids is not None
                if not dead_letters.edit_payload(conn, selection.ids[0], payload):
                    raise WireError(404, "unknown_dead_letter", "no pending letter with that id")
            client = redis_clients.sync_client(self.settings.require_redis_url())
            try:
                done = replay_letters(
                    conn, client, self.settings, selection, limit=limit, dry_run=dry_run
                )
            finally:
                client.close()
            return {"matched": done.matched, "replayed": done.replayed, "dry_run": dry_run}

        return await self.query(run)  # type: ignore[no-any-return]

    async def discard(self, request: Request) -> dict[str, Any]:
        project = await self.project(request)
        selection = dead_letters.Filter(project_id=project.id, ids=(_id(request),))
        count = await self.query(lambda conn: dead_letters.discard(conn, selection))
        if not count:
            raise WireError(404, "unknown_dead_letter", "no pending dead letter with that id")
        return {"discarded": count}

    async def reset(self, request: Request) -> dict[str, Any]:
        """Letters stuck in `replaying` (their replay message lost) back to `pending`."""
        project = await self.project(request)
        ids = (await _json_object(request)).get("ids")
        if not (
            isinstance(ids, list)
            and ids
            and all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
        ):
            raise WireError(400, "invalid_ids", 'the body is {"ids": [positive ids]}')
        selection = dead_letters.Filter(project_id=project.id, ids=tuple(ids), status=None)
        count = await self.query(lambda conn: dead_letters.release(conn, selection))
        return {"reset": count}

    # --- jobs -----------------------------------------------------------------------------

    async def reprocess(self, request: Request) -> Any:
        """Start (or resume) reprocessing of a project's time range on the workers."""
        import redis as sync_redis
        from starlette.responses import Response

        project = await self.project(request)
        body = await _json_object(request)
        if not body.get("since") or not body.get("until"):
            raise WireError(400, "invalid_range", "give since and until (ISO-8601 event times)")
        batch_size = body.get("batch_size") or self.settings.reprocess_batch_size
        if not _count(batch_size) or not 1 <= batch_size <= 50_000:
            raise WireError(400, "invalid_batch_size", "batch_size is a number from 1 to 50000")
        try:
            params = reprocessing.params(
                reprocessing.parse_time(str(body["since"])),
                reprocessing.parse_time(str(body["until"])),
                batch_size,
                self.rules,
            )
        except ValueError as error:
            raise WireError(400, "invalid_range", f"since/until: {error}") from None

        def start(conn: psycopg.Connection) -> tuple[int, bool]:
            try:
                found = reprocessing.start(
                    conn, project.id, params, "api", restart=bool(body.get("restart"))
                )
            except jobs.JobConflict as conflict:
                raise WireError(
                    409,
                    "job_active",
                    f"job {conflict.active_id} is reprocessing this project already",
                ) from None
            client = redis_clients.sync_client(self.settings.require_redis_url())
            try:
                reprocessing.enqueue(client, self.settings, found[0])
            except sync_redis.RedisError as error:
                # the job is recorded: the beat's sweep of stalled jobs starts it later
                log.warning(
                    "job %d recorded but not queued (%s): the sweep starts it", found[0], error
                )
            finally:
                client.close()
            return found

        job_id, resumed = await self.query(start)
        return Response(
            orjson.dumps({"job_id": job_id, "resumed": resumed}),
            202,
            {"Location": f"/admin/jobs/{job_id}"},
            media_type="application/json",
        )

    async def allowed_origins(self, request: Request) -> dict[str, Any]:
        """Replace the project's allowed origins (ingest/cors.py); `null` takes any."""
        project = await self.project(request)
        body = await _json_object(request)
        if set(body) != {"allowed_origins"}:
            raise WireError(400, "invalid_body", 'the body is {"allowed_origins": [...] or null}')
        given = body["allowed_origins"]
        if given is not None and not (
            isinstance(given, list) and all(isinstance(o, str) for o in given)
        ):
            raise WireError(400, "invalid_body", "allowed_origins is a list of strings or null")
        try:
            wanted = None if given is None else list(cors.normalize_origins(given))
        except cors.InvalidOrigin as error:
            raise WireError(400, "invalid_origin", str(error)) from None
        await self.query(lambda conn: projects.set_allowed_origins(conn, project.name, wanted))
        return {"project": project.name, "allowed_origins": wanted}

    async def jobs(self, request: Request) -> dict[str, Any]:
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in jobkinds.NAMES:
            raise WireError(400, "invalid_kind", "kind is one of " + ", ".join(jobkinds.NAMES))
        raw = request.query_params.get("before")
        before = _number(raw) if raw else None
        if raw and before is None:  # `?before=9223372036854775808` was a 500 (issue #13)
            raise WireError(400, "invalid_cursor", "before is a job id")
        limit = _limit(request, default=50)
        rows = await self.query(lambda conn: jobs.recent(conn, kind, limit, before or None))
        return {"jobs": rows, "next": rows[-1]["id"] if len(rows) == limit else None}

    async def job(self, request: Request) -> dict[str, Any]:
        job_id = _id(request, "unknown_job")
        found = await self.query(lambda conn: jobs.get(conn, job_id))
        if found is None:
            raise WireError(404, "unknown_job", f"no job {job_id}")
        return found  # type: ignore[no-any-return]

    async def cancel_job(self, request: Request) -> dict[str, Any]:
        job_id = _id(request, "unknown_job")
        status = await self.query(lambda conn: jobs.cancel(conn, job_id))
        if status is None:
            raise WireError(404, "unknown_job", f"no job {job_id}")
        return {"job_id": job_id, "status": status, "cancel_requested": True}

    def routes(self, wrap: Callable[[str, Handler], Any]) -> list[Route]:
        def guarded(handler: Handler) -> Handler:
            async def run(request: Request) -> Any:
                self.authorize(request)
                await refuse_nul(request)
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
            Route(base + "/deletions", wrap("admin", guarded(self.deletions)), methods=["GET"]),
            Route(
                base + "/allowed-origins",
                wrap("admin", guarded(self.allowed_origins)),
                methods=["PUT"],
            ),
            Route(
                base + "/dead-letters", wrap("admin", guarded(self.dead_letters)), methods=["GET"]
            ),
            Route(
                base + "/dead-letters/replay", wrap("admin", guarded(self.replay)), methods=["POST"]
            ),
            Route(
                base + "/dead-letters/reset", wrap("admin", guarded(self.reset)), methods=["POST"]
            ),
            Route(
                base + "/dead-letters/{id}",
                wrap("admin", guarded(self.dead_letter)),
                methods=["GET"],
            ),
            Route(
                base + "/dead-letters/{id}",
                wrap("admin", guarded(self.discard)),
                methods=["DELETE"],
            ),
            Route(base + "/reprocess", wrap("admin", guarded(self.reprocess)), methods=["POST"]),
            Route("/admin/jobs", wrap("admin", guarded(self.jobs)), methods=["GET"]),
            Route("/admin/jobs/{id}", wrap("admin", guarded(self.job)), methods=["GET"]),
            Route(
                "/admin/jobs/{id}/cancel", wrap("admin", guarded(self.cancel_job)), methods=["POST"]
            ),
        ]


# PostgreSQL's bigint: a larger id or cursor made the query itself fail (a 500, issue #13).
MAX_ID = 2**63 - 1
MAX_REPLAY = 1_000_000


async def refuse_nul(request: Request) -> None:
    """A NUL in any path or query parameter, or in a JSON body, is refused here, once for
    every endpoint: PostgreSQL refuses it in text, and `?reason=%00` (or a project name,
    an `anonymous_id`) reached a query and answered 500 (issue #13)."""
    params = [*request.path_params.values(), *request.query_params.keys()]
    params += request.query_params.values()
    if any("\x00" in str(value) for value in params):
        raise WireError(400, "invalid_text", "a parameter holds a NUL (\\u0000)")
    if request.method in ("POST", "PUT"):
        body = await request.body()  # Starlette keeps it: the handler reads it again
        if NUL_ESCAPE in body:
            try:
                found = has_nul(orjson.loads(body))
            except (orjson.JSONDecodeError, RecursionError):
                found = False  # the handler answers a body that is not JSON
            if found:
                raise WireError(400, "invalid_text", "the body holds a NUL (\\u0000)")


def _number(raw: str) -> int | None:
    """A decimal id within bigint, or None. (`str.isdigit` takes `²`, which int() refuses.)"""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body (empty: `{}`); 400 for anything else."""
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        raise WireError(400, "invalid_json", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise WireError(400, "invalid_envelope", "the body must be a JSON object")
    return body


def _id(request: Request, unknown: str = "unknown_dead_letter") -> int:
    value = _number(request.path_params["id"])
    if value is None:
        raise WireError(404, unknown, "ids are numbers")
    return value


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    value = _number(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise WireError(400, "invalid_limit", f"limit is a number from 1 to {MAX_LIMIT}")
    return value


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
