"""Projects and tokens: keys (and a rotated key's grace), webhook secret set or not,
allowed origins, acceptance rule; create, rotate, set or clear the secret, set the
origins, set the acceptance rule, revoke. Tokens
(for an actor of every project): list, create (the secret shown once, in the answer to
the form, never in an address), revoke.

A webhook secret is only ever typed in (a password field): no page shows it back."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from ingest.console.app import Console
from ingest.console.audit import utc
from ingest.operations import projects, tokens
from ingest.operations.actor import ROLES
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid
from ingest.operations.sessions import Session

PAGE_SIZE = 100
PROJECT_FIELD = "project."  # a token's projects: one checkbox per project, `project.<name>`


def _optional(value: str | None) -> str | None:
    return (value.strip() or None) if value is not None else None


def _origins(text: str) -> list[str]:
    """One origin (or domain) a line (commas and spaces separate too)."""
    return [o for o in re.split(r"[\s,]+", text) if o]


def _back(name: str, said: str) -> str:
    """Back to the project acted on, shown alone: in a list of many projects, paged by id,
    it may not be on the first page."""
    query = urlencode({"project": name, "done": said})
    return "/console/projects?" + query + "#project-" + quote(name)


def routes(console: Console) -> list[BaseRoute]:
    console.templates.env.filters["utc"] = utc

    def listing(request: Request) -> Any:
        cursor = _optional(request.query_params.get("cursor"))
        only = _optional(request.query_params.get("project"))
        token_cursor = _optional(request.query_params.get("tokens_cursor"))
        revoked = request.query_params.get("revoked") == "1"

        def work(ops: Ops) -> dict[str, Any]:
            if only is not None:  # one project (as the API's GET of it: 404 if not seen)
                shown, following = [projects.get(ops, only)], None
            else:
                found = projects.list_projects(ops, PAGE_SIZE, cursor)
                shown, following = found.items, found.next
            context: dict[str, Any] = {
                "projects": shown,
                "only": only,
                "next": urlencode({"cursor": following}) if following else None,
                "default_grace": ops.settings.key_rotation_grace_seconds,
                "roles": ROLES,
                "tokens": None,
                "revoked": revoked,
            }
            if ops.actor.everywhere:
                listed = tokens.list_tokens(ops, PAGE_SIZE, token_cursor, revoked)
                context["tokens"] = listed.items
                context["tokens_next"] = (
                    urlencode({"tokens_cursor": listed.next, "revoked": int(revoked)})
                    if listed.next
                    else None
                )
                # every project, for a new token's checkboxes
                context["all_projects"] = [p.name for p in projects.list_projects(ops, 1000).items]
            return context

        return work

    def create(request: Request, form: dict[str, str]) -> Any:
        name = form.get("name", "").strip()
        secret = form.get("webhook_secret") or None
        origins = _origins(form.get("allowed_origins", "")) or None
        accept = form.get("accept") or "all"

        def work(ops: Ops) -> str:
            made = projects.create(ops, name, secret, origins, accept)
            return _back(made.name, f"Project {made.name} created")

        return work

    def rotate(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]
        grace = _optional(form.get("grace_seconds"))

        def work(ops: Ops) -> str:
            if grace is not None and not grace.isdigit():
                raise Invalid("invalid_grace", "the grace period is a whole number of seconds")
            done = projects.rotate_key(ops, name, int(grace) if grace else None)
            until = (
                f"; the old key works until {utc(done.previous_key_expires_at)} UTC"
                if done.previous_key_expires_at
                else "; the old key stopped at once"
            )
            return _back(name, f"Key of {name} rotated{until}")

        return work

    def webhook_secret(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]
        clear = form.get("clear") == "1"
        secret = None if clear else form.get("secret", "")

        def work(ops: Ops) -> str:
            if not clear and not secret:
                raise Invalid("invalid_secret", "type a secret, or clear it")
            projects.set_webhook_secret(ops, name, secret)
            return _back(name, f"Webhook secret of {name} {'cleared' if clear else 'set'}")

        return work

    def allowed_origins(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]
        wanted = None if form.get("any") == "1" else _origins(form.get("origins", ""))

        def work(ops: Ops) -> str:
            done = projects.set_allowed_origins(ops, name, wanted)
            said = (
                "any origin"
                if done.allowed_origins is None
                else ", ".join(done.allowed_origins) or "no browser"
            )
            return _back(name, f"Allowed origins of {name}: {said}")

        return work

    def accept(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]
        wanted = form.get("accept", "")

        def work(ops: Ops) -> str:
            done = projects.set_accept(ops, name, wanted)
            return _back(name, f"{name} accepts {done.accept} calls")

        return work

    def company_domains(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]
        free, work_ = _origins(form.get("free", "")), _origins(form.get("work", ""))

        def work(ops: Ops) -> str:
            done = projects.set_company_domains(ops, name, free, work_)
            said = (
                f"free {' '.join(done.company_free_domains) or '(none)'};"
                f" work {' '.join(done.company_work_domains) or '(none)'}"
            )
            return _back(name, f"Company domains of {name}: {said}")

        return work

    def revoke(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]

        def work(ops: Ops) -> str:
            projects.revoke(ops, name)
            return "/console/projects?" + urlencode({"done": f"Project {name} revoked"})

        return work

    def create_token(request: Request, form: dict[str, str]) -> Any:
        """Answered with a page showing the token once (this POST's answer: never a
        redirect, so the secret is in no address and no history entry)."""
        name = form.get("name", "").strip()
        role = form.get("role", "")
        limited = [k[len(PROJECT_FIELD) :] for k in form if k.startswith(PROJECT_FIELD)]

        def work(ops: Ops) -> Any:
            made = tokens.create(ops, name, role, limited or None)
            return console.render(
                request, "token_created.html", Session(ops.actor, form.get("csrf", "")),
                created=made,
            )  # fmt: skip

        return work

    def revoke_token(request: Request, form: dict[str, str]) -> Any:
        name = request.path_params["name"]

        def work(ops: Ops) -> str:
            tokens.revoke(ops, name)
            return "/console/projects?" + urlencode({"done": f"Token {name} revoked"}) + "#tokens"

        return work

    p = "/console/projects/{name}"
    return [
        Route("/console/projects", console.page("projects.html", listing), methods=["GET"]),
        Route("/console/projects", console.action(create), methods=["POST"]),
        Route(p + "/rotate-key", console.action(rotate), methods=["POST"]),
        Route(p + "/webhook-secret", console.action(webhook_secret), methods=["POST"]),
        Route(p + "/allowed-origins", console.action(allowed_origins), methods=["POST"]),
        Route(p + "/accept", console.action(accept), methods=["POST"]),
        Route(p + "/company-domains", console.action(company_domains), methods=["POST"]),
        Route(p + "/revoke", console.action(revoke), methods=["POST"]),
        Route("/console/tokens", console.action(create_token), methods=["POST"]),
        Route("/console/tokens/{name}/revoke", console.action(revoke_token), methods=["POST"]),
    ]
