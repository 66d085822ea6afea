"""The console's machinery: who is signed in, CSRF, rendering, errors as pages."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg_pool
import redis
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ingest.api.endpoint import AdminRuntime, describe
from ingest.operations import sessions
from ingest.operations.context import Ops
from ingest.operations.errors import Forbidden, OperationError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "koala_console"
HEADERS = {
    # every script and style is ours, from /console/static: nothing from elsewhere runs
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Work = Callable[[Ops], Any]


class SignedOut(Exception):
    """No live session: the page sends the browser to sign in."""


class Console:
    def __init__(self, runtime: AdminRuntime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["nav"] = NAV

    # --- sessions -------------------------------------------------------------------

    def _with_ops(self, secret: str | None, work: Work) -> tuple[Any, sessions.Session]:
        with self.runtime.connection() as conn:
            session = sessions.resume(conn, self.settings, secret)
            if session is None:
                raise SignedOut
            ops = Ops(conn, self.settings, session.actor, redis_factory=self.runtime.redis)
            return work(ops), session

    async def run(self, request: Request, work: Work) -> tuple[Any, sessions.Session]:
        return await run_in_threadpool(self._with_ops, request.cookies.get(COOKIE), work)

    # --- answers ---------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: sessions.Session | None,
        http_status: int = 200,
        **context: Any,
    ) -> Response:
        response = self.templates.TemplateResponse(
            request,
            template,
            {
                "actor": session.actor if session else None,
                "csrf": session.csrf if session else "",
                "message": request.query_params.get("done"),
                **context,
            },
            status_code=http_status,
        )
        response.headers.update(HEADERS)
        return response

    def failed(self, request: Request, error: Exception) -> Response:
        if isinstance(error, SignedOut):
            if request.method == "GET" and request.headers.get("accept", "").startswith(
                "text/html"
            ):
                return RedirectResponse(f"/console/login?next={request.url.path}", 303)
            return JSONResponse(
                {"code": "signed_out", "message": "sign in again"}, 401, headers=HEADERS
            )
        if isinstance(error, OperationError):
            status, code, message = error.status, error.code, error.message
        elif isinstance(error, ValidationError):
            status, code, message = 400, "invalid_request", describe(error)
        elif isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout):
            status, code, message = 503, "database_unavailable", "PostgreSQL is unreachable"
        elif isinstance(error, redis.RedisError):
            status, code, message = 503, "redis_unavailable", "Redis is unreachable"
        else:
            log.exception("console %s %s failed", request.method, request.url.path)
            status, code, message = 500, "internal_error", "the page failed; the logs say why"
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"code": code, "message": message}, status, headers=HEADERS)
        return self.render(
            request, "error.html", None, status, code=code, error=message, status_code=status
        )

    def page(
        self, template: str, work: Callable[[Request], Work]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: run `work(request)` as the signed-in actor, render its dict."""

        async def handle(request: Request) -> Response:
            try:
                context, session = await self.run(request, work(request))
                # rendered inside: a template that fails answers the console's error page
                return self.render(request, template, session, **context)
            except Exception as error:
                return self.failed(request, error)

        return handle

    def action(
        self, work: Callable[[Request, dict[str, str]], Work]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A form POST: same-origin, the session's CSRF token, then `work(request, form)`,
        whose result is where to go next (303) or a Response."""

        async def handle(request: Request) -> Response:
            try:
                form = {k: str(v) for k, v in (await request.form()).items()}
                self.check_origin(request)

                result = await run_in_threadpool(
                    self._checked_action,
                    request.cookies.get(COOKIE),
                    form.get("csrf", ""),
                    work(request, form),
                )
            except Exception as error:
                return self.failed(request, error)
            if isinstance(result, Response):
                result.headers.update(HEADERS)
                return result
            return RedirectResponse(str(result), 303, headers=HEADERS)

        return handle

    def _checked_action(self, secret: str | None, csrf: str, work: Work) -> Any:
        with self.runtime.connection() as conn:
            session = sessions.resume(conn, self.settings, secret)
            if session is None:
                raise SignedOut
            if not csrf or not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
                raise Forbidden("csrf", "the form's CSRF token is missing or wrong: reload")
            return work(Ops(conn, self.settings, session.actor, redis_factory=self.runtime.redis))

    @staticmethod
    def check_origin(request: Request) -> None:
        """A form posted from another site is refused (besides SameSite=Strict and CSRF)."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin is None:
            return
        parts = urlsplit(origin)
        if f"{parts.scheme}://{parts.netloc}" != f"{request.url.scheme}://{request.url.netloc}":
            raise Forbidden("cross_origin", "a form from another site is refused")

    # --- sign in and out ------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(
            request, "login.html", None, next=_local(request.query_params.get("next"))
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token", ""))
        target = _local(str(form.get("next", "")))
        try:
            self.check_origin(request)
            secret = await run_in_threadpool(self._sign_in, token)
        except Exception as error:
            return self.failed(request, error)
        if secret is None:
            return self.render(
                request, "login.html", None, 401, next=target, error="That token is not valid."
            )
        response = RedirectResponse(target, 303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            secret,
            max_age=sessions.SESSION_SECONDS,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    def _sign_in(self, token: str) -> str | None:
        with self.runtime.connection() as conn:
            return sessions.sign_in(conn, self.settings, token)

    async def logout(self, request: Request) -> Response:
        secret = request.cookies.get(COOKIE)

        def out() -> None:
            with self.runtime.connection() as conn:
                sessions.sign_out(conn, secret)

        try:
            self.check_origin(request)
            await run_in_threadpool(out)
        except Exception as error:
            return self.failed(request, error)
        response = RedirectResponse("/console/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/console")
        return response

    def routes(self) -> list[BaseRoute]:
        """Sign in and out, and the static files; the pages add theirs (site.py)."""
        return [
            Route("/console/login", self.login_page, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static"),
        ]


def _local(target: str | None) -> str:
    """Only a path of the console: never an address elsewhere (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


# (label, path): the pages every signed-in actor sees in the navigation
NAV = [
    ("Overview", "/console"),
    ("Debugger", "/console/debugger"),
    ("Dead letters", "/console/dead-letters"),
    ("Rejections", "/console/rejections"),
    ("Deletions", "/console/deletions"),
    ("Profiles", "/console/profiles"),
    ("Companies", "/console/companies"),
    ("Jobs", "/console/jobs"),
    ("Projects", "/console/projects"),
    ("Audit", "/console/audit"),
]
