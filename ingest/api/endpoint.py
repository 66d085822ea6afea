"""An admin endpoint: its route, its models, and how a request becomes an operation.

Every endpoint is declared once (`routes.py`) with its query and body models (pydantic,
`extra="forbid"`: an unknown field is a `400` naming it, not a silently ignored typo) and
its response model; the same declaration makes the Starlette route here and its OpenAPI
entry (`openapi.py`). Every failure answers `{"code", "message"}`:

- a refusal of the operation (`OperationError`): its status, code and message;
- a request that does not fit its model: `400 invalid_request`, naming the fields;
- PostgreSQL or Redis unreachable: `503` with `Retry-After` (the request can be retried);
- anything else: `500 internal_error`, logged with its traceback (never sent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import psycopg_pool
import redis
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingest import metrics, redis_clients
from ingest.config import Settings
from ingest.operations import tokens
from ingest.operations.actor import Actor
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid, NotFound, OperationError, Unauthorized
from ingest.wire import NUL_ESCAPE, has_nul

log = logging.getLogger(__name__)

MAX_ID = 2**63 - 1  # PostgreSQL's bigint
RETRY_AFTER_SECONDS = 5

Run = Callable[[Ops, dict[str, Any], Any, Any], BaseModel]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # Starlette's, e.g. /admin/projects/{name}/dead-letters/{id:int}
    summary: str
    response: type[BaseModel]
    run: Run  # (ops, path params, query model, body model) -> response model
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    status: int = 200
    acts: bool = False  # changes something: needs an operator (checked by the operation)
    tag: str = "admin"
    description: str = ""
    not_found: str = "unknown_project"  # the code of a 404 for an id out of range
    errors: tuple[int, ...] = field(default=(400, 401, 404))

    @property
    def openapi_path(self) -> str:
        return re.sub(r"\{(\w+):\w+\}", r"{\1}", self.path)


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps({"code": code, "message": message}),
        status,
        headers,
        media_type="application/json",
    )


def describe(error: ValidationError) -> str:
    """`ids.0: Input should be greater than or equal to 1; id: unknown field`: every
    problem, by field, in one line."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        what = "unknown field" if problem["type"] == "extra_forbidden" else problem["msg"]
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


class AdminRuntime:
    """What the endpoints share: a small connection pool (the admin API is not on the hot
    path: its queries run in Starlette's thread pool) and a Redis client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = psycopg_pool.ConnectionPool(
            settings.require_database_url(),
            min_size=0,
            max_size=4,
            open=False,
            timeout=10,
            kwargs={"autocommit": True, **settings.connection_options},
        )
        self._opened = False
        self._redis: redis.Redis | None = None

    def close(self) -> None:
        if self._opened:
            self.pool.close()
        if self._redis is not None:
            self._redis.close()

    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_clients.sync_client(self.settings.require_redis_url())
        return self._redis

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection (the pool opens on first use)."""
        if not self._opened:
            self.pool.open()
            self._opened = True
        with self.pool.connection() as conn:
            yield conn

    def execute(self, authorization: str, work: Callable[[Ops], BaseModel]) -> BaseModel:
        with self.connection() as conn:
            actor = self.authenticate(conn, authorization)
            ops = Ops(conn, self.settings, actor, redis_factory=self.redis)
            return work(ops)

    def authenticate(self, conn: psycopg.Connection, authorization: str) -> Actor:
        """ADMIN_TOKEN or a token of `koala-ingest tokens create` (ingest/operations/tokens)."""
        actor = tokens.authenticate(conn, self.settings, authorization)
        if actor is None:
            raise Unauthorized(
                "invalid_token",
                "a valid Bearer token is required (ADMIN_TOKEN, or one from"
                " `koala-ingest tokens create`)",
            )
        return actor

    def route(self, endpoint: Endpoint) -> Route:
        async def handle(request: Request) -> Response:
            response = await self.answer(endpoint, request)
            metrics.labelled(metrics.REQUESTS, "admin", str(response.status_code)).inc()
            return response

        return Route(endpoint.path, handle, methods=[endpoint.method], name=None)

    async def answer(self, endpoint: Endpoint, request: Request) -> Response:
        try:
            path = self.path_params(endpoint, request)
            query = self.parse_query(endpoint, request)
            body = await self.parse_body(endpoint, request)
            result = await run_in_threadpool(
                self.execute,
                request.headers.get("authorization", ""),
                lambda ops: endpoint.run(ops, path, query, body),
            )
        except OperationError as error:
            metrics.labelled(metrics.REQUEST_ERRORS, error.code).inc()
            return json_error(error.status, error.code, error.message)
        except ValidationError as error:
            return json_error(400, "invalid_request", describe(error))
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            log.warning("admin %s: database unavailable: %s", endpoint.path, error)
            return json_error(
                503,
                "database_unavailable",
                "PostgreSQL is unreachable; try again later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except redis.RedisError as error:
            log.warning("admin %s: Redis unavailable: %s", endpoint.path, error)
            return json_error(
                503,
                "redis_unavailable",
                "Redis is unreachable; try again later",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except Exception:
            log.exception("admin %s %s failed", request.method, endpoint.path)
            return json_error(500, "internal_error", "the request failed; the logs say why")
        return Response(
            result.model_dump_json().encode(),
            endpoint.status,
            media_type="application/json",
        )

    @staticmethod
    def path_params(endpoint: Endpoint, request: Request) -> dict[str, Any]:
        out = dict(request.path_params)
        for key, value in out.items():
            if isinstance(value, int) and not 0 < value <= MAX_ID:
                raise NotFound(endpoint.not_found, f"{key} is out of range")
            if isinstance(value, str) and "\x00" in value:
                raise _nul()
        return out

    @staticmethod
    def parse_query(endpoint: Endpoint, request: Request) -> BaseModel | None:
        params = request.query_params
        if any("\x00" in k or "\x00" in v for k, v in params.multi_items()):
            raise _nul()
        if endpoint.query is None:
            if params:
                raise _invalid("this endpoint takes no query parameters: " + ", ".join(params))
            return None
        repeated = [k for k in params if len(params.getlist(k)) > 1]
        if repeated:
            raise _invalid("given more than once: " + ", ".join(repeated))
        return endpoint.query.model_validate(dict(params))

    @staticmethod
    async def parse_body(endpoint: Endpoint, request: Request) -> BaseModel | None:
        raw = await request.body()
        if endpoint.body is None:
            if raw.strip():
                raise _invalid("this endpoint takes no body")
            return None
        if not raw.strip():
            raise Invalid("invalid_json", "the body must be a JSON object")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Invalid("invalid_json", "the body must be JSON") from None
        if not isinstance(data, dict):
            raise Invalid("invalid_json", "the body must be a JSON object")
        # PostgreSQL refuses a NUL in text: refused here, once for every endpoint
        if NUL_ESCAPE in raw and has_nul(data):
            raise _nul()
        return endpoint.body.model_validate(data)


def _invalid(message: str) -> OperationError:
    return Invalid("invalid_request", message)


def _nul() -> OperationError:
    return Invalid("invalid_text", "a parameter or the body holds a NUL (\\u0000)")
