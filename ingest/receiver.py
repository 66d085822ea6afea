"""The HTTP receiver: authenticate, split into calls, put on Redis, answer. Nothing else.

No PostgreSQL on the request path (project keys come from an in-memory cache), and `200`
is said only once every accepted call is in Redis. Calls refused for their content travel
through the queue too, to the `rejections` table, so nothing is dropped silently.
Status codes follow what the senders' retry logic understands (wire-formats.md):
4xx for a request that will never succeed, 429/503 with `Retry-After` for our trouble.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ingest import cors, metrics, redis_clients
from ingest.acceptance import ACCEPT_IDENTIFIED, Acceptance
from ingest.api import docs, openapi
from ingest.api.endpoint import AdminRuntime, json_error
from ingest.api.routes import ADMIN
from ingest.breaker import keys as breaker_keys
from ingest.config import Settings
from ingest.console import site as console
from ingest.keys import ProjectKeys
from ingest.limits import limits_for
from ingest.message import QueuedRequest
from ingest.queue import (
    Ledger,
    ProjectLimited,
    QueueFull,
    QueueUnavailable,
    QueueWriter,
    ReplicationLagging,
    oldest_received,
)
from ingest.store.projects import Project
from ingest.wire import (
    SHORT_PATHS,
    BodyReader,
    Parsed,
    Rejection,
    WireError,
    basic_auth_key,
    body_key,
    decode_json,
    evidence_text,
    parse_koala,
    parse_segment,
    parse_webhook,
    webhook_signature_ok,
)

log = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = "5"
RETRY_AFTER_FULL = "10"


class JSONAnswer:
    """A JSON answer as two ASGI messages, its header list built once.

    Starlette's `Response` builds and normalizes a header list per answer; on the single-call
    path that was a measurable share of the receiver's own time (bench/README.md). Any ASGI
    callable is a valid Starlette endpoint result, so routes and the fast path share it.
    """

    __slots__ = ("body", "raw_headers", "status_code")

    def __init__(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None):
        self.body = body
        self.status_code = status
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        for name, value in (headers or {}).items():
            self.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


Answer = Response | JSONAnswer
SUCCESS = orjson.dumps({"success": True})


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONAnswer:
    return JSONAnswer(orjson.dumps(body), status, headers)


def error_response(wire: WireError, **extra: Any) -> JSONAnswer:
    headers = None
    if wire.retry_after is not None:
        headers = {"Retry-After": str(wire.retry_after)}
    elif wire.status == 503:
        headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE}
    elif wire.status == 429:
        headers = {"Retry-After": RETRY_AFTER_FULL}
    return json_response(
        {**extra, "code": wire.code, "message": wire.message}, wire.status, headers
    )


_stamp: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The `receivedAt` stamp, ISO 8601 to the millisecond in UTC.

    Formatted once per millisecond: at thousands of requests per second most calls share
    their millisecond with the one before."""
    global _stamp
    ms = time.time_ns() // 1_000_000
    if ms != _stamp[0]:
        moment = datetime.fromtimestamp(ms / 1000, UTC)
        _stamp = (ms, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return _stamp[1]


# Longer headers are decoded each time: a cache of whatever anyone sends must stay small.
CACHED_HEADER_CHARS = 256


@functools.lru_cache(maxsize=4096)
def _cached_header_key(header: str) -> str | None:
    return basic_auth_key(header)


def _header_key(header: str) -> str | None:
    """`basic_auth_key` remembered per header (senders repeat the same one on every call),
    for headers of a real key's size only: at most 4096 x 256 characters held."""
    if len(header) > CACHED_HEADER_CHARS:
        return basic_auth_key(header)
    return _cached_header_key(header)


class RawHeaders:
    """Header lookup over the ASGI scope's raw list, decoding only what is asked for."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        # ASGI promises an iterable; uvicorn gives a list (read more than once here)
        self._raw = raw if isinstance(raw, list) else list(raw)

    def get(self, name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in self._raw:
            if key == wanted:  # ASGI servers give lowercase names
                return value.decode("latin-1")
        return None


class HotRequest:
    """A request as the hot handlers read it, straight from the ASGI scope: its headers and
    its body. Starlette's `Request` wraps the same two things in objects the single-call
    path paid for on every call (about a tenth of the receiver's own time)."""

    __slots__ = ("_first", "_receive", "headers")

    def __init__(self, scope: Any, receive: Any) -> None:
        self.headers = RawHeaders(scope["headers"])
        self._receive = receive
        self._first: dict[str, Any] | None = None

    async def whole_body(self, limit: int) -> bytes | None:
        """The body when it came in one message within `limit` (what nearly every call
        does), else None: `stream()` then yields it all, that first message included."""
        self._first = message = await self._receive()
        body: bytes = message.get("body", b"")
        if (
            message["type"] == "http.request"
            and not message.get("more_body")
            and (len(body) <= limit)
        ):
            return body
        return None

    async def stream(self) -> AsyncIterator[bytes]:
        message, self._first = self._first, None
        while True:
            if message is None:
                message = await self._receive()
            if message["type"] == "http.disconnect":
                raise WireError(400, "client_disconnected", "the client went away mid-body")
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return
            message = None


Readable = Request | HotRequest


class Receiver:
    """The receiver's state: settings, key cache, queue writer. One per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis_clients.async_client(
            settings.require_redis_url(),
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
        )
        self.writer = QueueWriter(
            self.redis,
            queue_key=settings.queue_key,
            queue_name=settings.queue_name,
            counters_key=settings.redis_key_prefix + "received",
            max_calls=settings.worker_batch_max_calls,
            max_depth=settings.queue_max_depth,
            ledger=Ledger(settings.redis_key_prefix, settings.queue_name),
            replica_acks=settings.redis_replica_acks,
            replica_timeout_ms=settings.redis_replica_acks_timeout_ms,
        )
        self.keys = ProjectKeys(settings.require_database_url(), settings.key_cache_seconds)
        # Koala's `identified` rule (ingest/acceptance.py), for projects that chose it
        self.identified = Acceptance(frozenset(settings.blocked_identifiers))
        self._tasks: list[asyncio.Task[None]] = []
        self.breaker: dict[str, Any] | None = None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.keys.run()),
            asyncio.create_task(self._poll_queue()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.redis.aclose()

    async def _poll_queue(self) -> None:
        """Once a second: queue depth, the circuit breaker, the workers' counters."""
        names = breaker_keys(self.settings.redis_key_prefix)
        while True:
            with contextlib.suppress(Exception):
                await self.writer.poll()
                state = await self.redis.get(names["state"])
                self.breaker = orjson.loads(state) if state else None
                oldest = await self.redis.lindex(self.settings.queue_key, -1)
                received = oldest_received(oldest) if oldest else None
                metrics.QUEUE_OLDEST_AGE.set(
                    max(0.0, (datetime.now(UTC) - received).total_seconds()) if received else 0
                )
                counters = await self.redis.hgetall(names["metrics"])
                metrics.WORKER_COUNTERS.values = {
                    (k.decode() if isinstance(k, bytes) else k): int(v) for k, v in counters.items()
                }
            metrics.QUEUE_DEPTH.set(self.writer.depth)
            metrics.BREAKER_OPEN.set(1 if self.breaker else 0)
            await asyncio.sleep(1.0)

    # --- the request path ------------------------------------------------------------

    async def read_body(self, request: Readable, project: Project | None, source: str) -> bytes:
        encoding = request.headers.get("content-encoding")
        if encoding is None and isinstance(request, HotRequest):
            body = await request.whole_body(self.settings.max_request_bytes)
            if body is not None:
                return body
        reader = BodyReader(self.settings.max_request_bytes, encoding)
        try:
            async for chunk in request.stream():
                reader.feed(chunk)
            return reader.finish()
        except WireError as error:
            if error.status == 413 and project is not None:
                # A request over the limit with a known key is counted and kept as evidence.
                rejection = Rejection(None, error.code, error.message, reader.evidence)
                await self.enqueue(project, source, Parsed(rejected=[rejection]), now_iso())
            raise

    async def project_for(self, key: str | None) -> Project:
        project = await self.keys.get(key)
        if project is None:
            if not self.keys.loaded:
                raise WireError(503, "not_ready", "project keys are not loaded yet")
            raise WireError(
                401,
                "invalid_key" if key else "missing_key",
                "unknown write key" if key else "no write key was sent",
            )
        return project

    async def check_origin(
        self, request: Readable, project: Project, source: str, body: bytes
    ) -> None:
        """The project's allowed origins (ingest/cors.py): a browser call from another
        origin is refused with 403 and kept as a rejection, its body as evidence. Called
        only for a project that has a list."""
        origin = request.headers.get("origin")
        if cors.origin_allowed(project.allowed_origins, origin):
            return
        error = WireError(
            403,
            "origin_not_allowed",
            f"this project takes browser calls only from its allowed origins, not {origin!r:.200}",
        )
        evidence = evidence_text(body)
        refused = Parsed(rejected=[Rejection(None, error.code, error.message, evidence)])
        await self.enqueue(project, source, refused, now_iso())
        raise error

    def acceptance(self, project: Project) -> Acceptance | None:
        """The project's acceptance rule for the parsers; None: it takes every call."""
        return self.identified if project.accept == ACCEPT_IDENTIFIED else None

    async def enqueue(
        self, project: Project, source: str, parsed: Parsed, received_at: str
    ) -> None:
        if parsed.received == 0:
            return  # an empty batch: nothing to keep, nothing to count
        queued = QueuedRequest(
            project_id=project.id,
            source=source,
            received_at=received_at,
            calls=parsed.calls,
            rejected=parsed.rejected,
            shared=parsed.shared,
        )
        settings = self.settings
        try:
            await self.writer.put(
                queued,
                limits_for(project, settings.project_rate_limit, settings.project_queue_limit),
            )
        except ProjectLimited as error:
            raise WireError(429, "rate_limited", str(error), error.retry_after) from None
        except QueueFull as error:
            raise WireError(429, "queue_full", str(error)) from None
        except QueueUnavailable as error:
            log.warning("queue unavailable: %s", error)
            raise WireError(503, "queue_unavailable", "the queue is unavailable") from None
        except ReplicationLagging as error:
            log.warning("replication lagging: %s", error)
            raise WireError(
                503, "replication_lagging", "the calls are not on enough replicas yet: resend"
            ) from None
        if parsed.calls:
            metrics.labelled(metrics.CALLS_ACCEPTED, source).inc(len(parsed.calls))
        for rejection in parsed.rejected:
            metrics.labelled(metrics.CALLS_REJECTED, source, rejection.code).inc()

    async def refuse_single(
        self, project: Project, source: str, parsed: Parsed, received_at: str
    ) -> Answer:
        """A request carrying one call that was refused: record it, then answer 4xx."""
        await self.enqueue(project, source, parsed, received_at)
        rejection = parsed.rejected[0]
        status = 413 if rejection.code == "call_too_large" else 400
        return json_response({"code": rejection.code, "message": rejection.message}, status)

    async def segment(self, request: Readable, path_type: str | None) -> Answer:
        authorization = request.headers.get("authorization")
        header_key = _header_key(authorization) if authorization else None
        project = await self.project_for(header_key) if header_key else None
        body = await self.read_body(request, project, "segment")
        received_at = now_iso()
        doc = decode_json(body)
        if project is None and isinstance(doc, dict) and doc.get("writeKey"):
            # the key in the body: the project's acceptance rule is needed while parsing
            project = await self.project_for(body_key(doc))
        parsed = parse_segment(
            doc,
            path_type,
            raw=body,
            max_call_bytes=self.settings.max_call_bytes,
            max_batch_calls=self.settings.max_batch_calls,
            received_at=received_at,
            accept=self.acceptance(project) if project is not None else None,
        )
        if project is None:
            project = await self.project_for(parsed.write_key)
        if project.allowed_origins is not None:  # no coroutine per call for the rest
            await self.check_origin(request, project, "segment", body)
        if path_type is not None and parsed.rejected:
            return await self.refuse_single(project, "segment", parsed, received_at)
        await self.enqueue(project, "segment", parsed, received_at)
        return self.accepted(parsed)

    @staticmethod
    def accepted(parsed: Parsed, body: dict[str, Any] | None = None) -> Answer:
        if body is None and not parsed.rejected:
            return JSONAnswer(SUCCESS)
        answer: dict[str, Any] = dict(body or {"success": True})
        if parsed.rejected:
            answer["rejected"] = [r.as_dict() for r in parsed.rejected]
        return json_response(answer)

    async def koala(self, request: Request) -> Answer:
        project = await self.project_for(request.path_params["public_key"])
        body = await self.read_body(request, project, "koala")
        if project.allowed_origins is not None:  # no coroutine per call for the rest
            await self.check_origin(request, project, "koala", body)
        received_at = now_iso()
        doc = decode_json(body)
        try:
            parsed = parse_koala(
                doc,
                max_call_bytes=self.settings.max_call_bytes,
                max_batch_calls=self.settings.max_batch_calls,
                received_at=received_at,
                accept=self.acceptance(project),
            )
        except WireError as error:
            if error.status == 400 and error.code != "invalid_envelope":
                # refused for what the request says of its person (no identity, a NUL, too
                # deep): kept as a rejection with the body, like a refused single call
                evidence = Rejection(None, error.code, error.message, evidence_text(body))
                await self.enqueue(project, "koala", Parsed(rejected=[evidence]), received_at)
                return error_response(error, error="Invalid request")
            raise
        await self.enqueue(project, "koala", parsed, received_at)
        return self.accepted(parsed, {"status": "success"})

    async def koala_auth(self, request: Request) -> Answer:
        await self.project_for(request.path_params["public_key"])
        return Response(status_code=204)

    async def webhook(self, request: Request) -> Answer:
        project = await self.project_for(request.path_params["public_key"])
        body = await self.read_body(request, project, "webhook")
        if project.webhook_secret and not webhook_signature_ok(
            project.webhook_secret, body, request.headers.get("x-signature")
        ):
            raise WireError(401, "invalid_signature", "X-Signature does not match the body")
        if project.allowed_origins is not None:  # no coroutine per call for the rest
            await self.check_origin(request, project, "webhook", body)
        received_at = now_iso()
        doc = decode_json(body)
        parsed = parse_webhook(
            doc,
            max_call_bytes=self.settings.max_call_bytes,
            max_batch_calls=self.settings.max_batch_calls,
            received_at=received_at,
            signed=bool(project.webhook_secret),  # the signature was checked above
            accept=self.acceptance(project),
        )
        if not isinstance(doc, list) and parsed.rejected:
            return await self.refuse_single(project, "webhook", parsed, received_at)
        await self.enqueue(project, "webhook", parsed, received_at)
        return self.accepted(parsed)

    SDK_METRIC_NAMES = frozenset(
        {
            "analytics_js.invoke",
            "analytics_js.invoke.error",
            "analytics_js.integration.invoke",
            "analytics_js.integration.invoke.error",
        }
    )

    async def sdk_metrics(self, request: Readable) -> Answer:
        """`POST /v1/m`: analytics.js's own telemetry (`{"series": [{"metric", "value",
        "tags"}]}`), sent to its `apiHost` like Segment's API takes it. Counted by metric
        name (others as `other`, so a sender cannot grow the label set), never stored:
        they are not calls. No key: analytics.js sends none here."""
        doc = decode_json(await self.read_body(request, None, "segment"))
        series = doc.get("series") if isinstance(doc, dict) else None
        if not isinstance(series, list):
            raise WireError(400, "invalid_envelope", 'an SDK metrics body is {"series": [...]}')
        for item in series[:100]:
            if not isinstance(item, dict):
                continue
            name = item.get("metric")
            value = item.get("value")
            counted = value if isinstance(value, int) and 0 < value <= 1000 else 1
            label = name if name in self.SDK_METRIC_NAMES else "other"
            metrics.labelled(metrics.SDK_METRICS, label).inc(counted)
        return JSONAnswer(SUCCESS)

    # --- probes ------------------------------------------------------------------------

    def not_ready_reasons(self) -> list[str]:
        """What stops THIS receiver from taking calls: a readiness probe failing on it takes
        only this receiver out of the load balancer."""
        reasons = []
        if not self.writer.healthy:
            reasons.append("redis is unreachable")
        if not self.keys.loaded:
            reasons.append("project keys are not loaded (PostgreSQL unreachable?)")
        return reasons

    def warnings(self) -> list[str]:
        """Cluster-wide conditions every receiver sees alike. They do not fail readiness:
        taking every receiver out at once would turn a queue-full `429` (with Retry-After)
        or calls safely queued while the breaker holds the workers into refused
        connections."""
        warnings = []
        if self.writer.full:
            warnings.append(f"queue depth {self.writer.depth} is at its ceiling (answering 429)")
        if self.breaker:
            warnings.append(
                f"circuit breaker open: {self.breaker['reason']}; workers hold their batches"
            )
        return warnings


RequestT = TypeVar("RequestT", bound=Readable)


def endpoint(
    kind: str, handler: Callable[[RequestT], Awaitable[Any]]
) -> Callable[[RequestT], Awaitable[Answer]]:
    """Map WireError to its answer, a plain result to JSON, and count every answer by
    endpoint kind and status."""

    async def run(request: RequestT) -> Answer:
        try:
            result = await handler(request)
            response = (
                result if isinstance(result, Response | JSONAnswer) else json_response(result)
            )
        except WireError as error:
            metrics.labelled(metrics.REQUEST_ERRORS, error.code).inc()
            response = error_response(error)
        metrics.labelled(metrics.REQUESTS, kind, str(response.status_code)).inc()
        return response

    return run


HotHandler = Callable[[HotRequest], Awaitable[Answer]]


class FastPath:
    """The hot endpoints (`/v1/*` calls and batches) dispatched by exact path, without
    Starlette's router, middleware stack and Request object; everything else goes to the
    Starlette app. The handlers are the same ones the Starlette routes use.

    A browser's request (one with `Origin`) to an ingestion path goes through CORS first
    (ingest/cors.py), preflights included; server-side senders never pay for it."""

    def __init__(self, app: Starlette, handlers: dict[str, HotHandler]):
        self.app = app
        self.handlers = handlers
        self.browser = CORSMiddleware(self.ingest, **cors.CORS)

    @property
    def routes(self) -> list[Any]:
        return self.app.routes

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # `ingest` inlined: a coroutine frame more per request was ~2% of a single call
        # (callgrind, bench.receiver_cost)
        if scope["type"] == "http":
            path = scope["path"]
            if cors.is_browser_path(path) and cors.has_origin(scope["headers"]):
                await self.browser(scope, receive, send)
                return
            if scope["method"] == "POST":
                handler = self.handlers.get(path)
                if handler is not None:
                    response = await handler(HotRequest(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def ingest(self, scope: Any, receive: Any, send: Any) -> None:
        """What CORS wraps for a browser's request: the same dispatch as `__call__`."""
        handler = self.handlers.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(HotRequest(scope, receive))
        await response(scope, receive, send)


def create_app(settings: Settings) -> FastPath:
    receiver = Receiver(settings)
    admin = AdminRuntime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await receiver.start()
        try:
            yield
        finally:
            admin.close()
            await receiver.stop()

    def single(call_type: str) -> Callable[[Readable], Awaitable[Answer]]:
        async def handle(request: Readable) -> Answer:
            return await receiver.segment(request, call_type)

        return handle

    async def batch(request: Readable) -> Answer:
        return await receiver.segment(request, None)

    async def healthz(request: Request) -> Answer:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Answer:
        reasons = receiver.not_ready_reasons()
        warnings = receiver.warnings()
        if reasons:
            return json_response(
                {"status": "not ready", "reasons": reasons, "warnings": warnings}, 503
            )
        return json_response(
            {"status": "ready", "queue_depth": receiver.writer.depth, "warnings": warnings}
        )

    async def metrics_endpoint(request: Request) -> Response:
        metrics.QUEUE_DEPTH.set(receiver.writer.depth)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    spec = orjson.dumps(openapi.build())

    async def openapi_endpoint(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    hot: dict[str, HotHandler] = {}
    for call_type in ("track", "identify", "page", "screen", "group", "alias"):
        hot[f"/v1/{call_type}"] = endpoint("segment", single(call_type))
    for short, call_type in SHORT_PATHS.items():
        hot[f"/v1/{short}"] = endpoint("segment", single(call_type))
    for path in ("/v1/batch", "/v1/import", "/v1/b"):
        hot[path] = endpoint("segment", batch)
    hot["/v1/m"] = endpoint("sdk_metrics", receiver.sdk_metrics)
    routes: list[BaseRoute] = [Route("/openapi.json", openapi_endpoint, methods=["GET"])]
    routes += [Route(path, handler, methods=["POST"]) for path, handler in hot.items()]
    routes += [
        Route(
            "/web/projects/{public_key}/batch", endpoint("koala", receiver.koala), methods=["POST"]
        ),
        Route(
            "/web/projects/{public_key}/auth",
            endpoint("koala_auth", receiver.koala_auth),
            methods=["GET"],
        ),
        Route(
            "/webhooks/segment/{public_key}",
            endpoint("webhook", receiver.webhook),
            methods=["POST"],
        ),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *(admin.route(e) for e in ADMIN),
        *docs.routes(),
        *console.routes(admin),
    ]

    async def http_error(request: Request, error: Exception) -> Response:
        """Starlette's own answers (unknown path 404, wrong method 405) in our JSON shape."""
        assert isinstance(error, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return Response(
            orjson.dumps({"code": code, "message": str(error.detail)}),
            error.status_code,
            dict(error.headers or {}),
            media_type="application/json",
        )

    async def server_error(request: Request, error: Exception) -> Response:
        """An unexpected failure outside the endpoints' own handling: JSON like the rest
        (Starlette's ServerErrorMiddleware logs it with its traceback)."""
        return json_error(500, "internal_error", "the request failed; the logs say why")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.receiver = receiver
    return FastPath(app, hot)
