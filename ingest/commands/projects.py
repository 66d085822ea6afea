"""`koala-ingest projects`: projects (sources), their keys, webhook secrets, origins,
acceptance rule and company domain exceptions.

Each command calls `ingest.operations.projects` (as the admin API and the console do) and
only prints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from ingest.commands.common import console, fail, ops, print_json
from ingest.operations import projects
from ingest.operations.errors import Invalid
from ingest.operations.projects import ProjectInfo

app = typer.Typer(help="Projects (sources) and their public keys.", no_args_is_help=True)


class Accept(StrEnum):
    """Koala's acceptance rule (ingest/acceptance.py)."""

    all = "all"
    identified = "identified"


@app.command("create")
def create(
    name: str,
    webhook_secret: Annotated[
        str | None, typer.Option(help="Shared secret of Segment's webhook (X-Signature).")
    ] = None,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin whose browsers may send (repeat it; https://*.acme.com for"
            " subdomains). None given: any origin."
        ),
    ] = None,
    accept: Annotated[
        Accept,
        typer.Option(
            help="identified: refuse track and identify calls without an email or a Koala"
            " profile_id (Koala's default); all: take them."
        ),
    ] = Accept.all,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Create a project and print its public key (the Segment write key)."""
    with ops() as context, _bad_origin_exits_1():
        project = projects.create(
            context, name, webhook_secret, allowed_origin or None, accept.value
        )
    if as_json:
        print_json(project)
    else:
        typer.echo(f"created project {project.name}; public key: {project.public_key}")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List active projects: keys (and a previous key in its grace), webhook secret or
    not, allowed origins."""
    rows: list[ProjectInfo] = []
    with ops() as context:
        cursor = None
        while True:  # every page: the CLI prints them all
            page = projects.list_projects(context, cursor=cursor)
            rows.extend(page.items)
            if page.next is None:
                break
            cursor = page.next
    if as_json:
        typer.echo(orjson.dumps([_listed(p) for p in rows]).decode())
        return
    table = Table("id", "name", "public key", "previous key until", "webhook secret",
                  "allowed origins", "accept")  # fmt: skip
    for p in rows:
        table.add_row(
            str(p.id),
            p.name,
            p.public_key,
            f"{p.previous_public_key} until {p.previous_key_expires_at:%Y-%m-%d %H:%M:%S %Z}"
            if p.previous_public_key and p.previous_key_expires_at
            else "",
            "yes" if p.has_webhook_secret else "no",
            " ".join(p.allowed_origins) if p.allowed_origins is not None else "any",
            p.accept,
        )
    console.print(table)


def _listed(project: ProjectInfo) -> dict[str, Any]:
    out = project.model_dump(mode="json")
    out["webhook_secret"] = project.has_webhook_secret  # the name `list --json` had first
    return out


@app.command("rotate-key")
def rotate_key(
    name: str,
    grace_seconds: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="How long the current key is still taken (default"
            " KOALA_KEY_ROTATION_GRACE_SECONDS; 0: it stops at once).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Give a project a new public key. The current key keeps working for the grace period,
    so senders can be moved to the new one; then receivers refuse it (401) within
    KOALA_KEY_CACHE_SECONDS."""
    with ops() as context:
        rotated = projects.rotate_key(context, name, grace_seconds)
    if as_json:
        print_json(rotated)
        return
    typer.echo(f"{rotated.name}: new public key {rotated.public_key}")
    if rotated.previous_public_key and rotated.previous_key_expires_at:
        typer.echo(
            f"the previous key {rotated.previous_public_key} is taken until"
            f" {rotated.previous_key_expires_at.isoformat(timespec='seconds')}"
        )
    else:
        typer.echo("the previous key is no longer taken")


@app.command("webhook-secret")
def webhook_secret(
    name: str,
    secret: Annotated[
        str | None,
        typer.Argument(help="The secret Segment's webhook signs with; '-' reads it from stdin."),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove it: webhook calls are taken unsigned.")
    ] = False,
) -> None:
    """Set or clear the secret Segment's webhook destination signs with (X-Signature).
    With one, unsigned or wrongly signed webhook calls get 401 and signed delete calls are
    carried out. Receivers apply it within KOALA_KEY_CACHE_SECONDS."""
    if clear == (secret is not None):
        raise fail("give the secret (or '-' to read it from stdin), or --clear")
    if secret == "-":
        secret = sys.stdin.readline().rstrip("\r\n")
    with ops() as context:
        done = projects.set_webhook_secret(context, name, None if clear else secret)
    typer.echo(f"{done.name}: webhook secret " + ("set" if done.has_webhook_secret else "cleared"))


@app.command("origins")
def origins(
    name: str,
    origin: Annotated[
        list[str] | None,
        typer.Argument(help="Origins whose browsers may send (https://*.acme.com: subdomains)."),
    ] = None,
    any_origin: Annotated[
        bool, typer.Option("--any", help="Take calls from any origin (the default).")
    ] = False,
) -> None:
    """Set the origins a project's browser calls may come from; other origins are refused
    (403 origin_not_allowed, kept as rejections). Calls without Origin (server-side SDKs)
    are always taken. Receivers apply it within KOALA_KEY_CACHE_SECONDS."""
    if any_origin == bool(origin):
        raise fail("give the allowed origins, or --any")
    with ops() as context, _bad_origin_exits_1():
        done = projects.set_allowed_origins(context, name, None if any_origin else origin)
    wanted = done.allowed_origins
    typer.echo(f"{name}: calls from " + (" ".join(wanted) if wanted else "any origin"))


@app.command("accept")
def accept_(
    name: str,
    mode: Annotated[
        Accept,
        typer.Argument(
            help="identified: refuse track and identify calls carrying neither an email nor"
            " a Koala profile_id; all: take every call."
        ),
    ],
) -> None:
    """Set Koala's acceptance rule. With `identified`, refused calls are kept as rejections
    (code not_identified) and counted; page, screen, group and alias are always taken.
    Receivers apply it within KOALA_KEY_CACHE_SECONDS."""
    with ops() as context:
        done = projects.set_accept(context, name, mode.value)
    typer.echo(f"{done.name}: accept {done.accept}")


@app.command("company-domains")
def company_domains(
    name: str,
    free: Annotated[
        list[str] | None,
        typer.Option(
            "--free",
            help="An email domain that stands for no company in this project, e.g. a regional"
            " ISP's (repeat it).",
        ),
    ] = None,
    work: Annotated[
        list[str] | None,
        typer.Option(
            "--work",
            help="An email domain that always stands for a company in this project, even when"
            " a free-mail or disposable list names it (repeat it).",
        ),
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove every exception of the project.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show, or replace (with --free/--work, or --clear), a project's company domain
    exceptions. The given lists replace the project's; workers apply them within
    KOALA_KEY_CACHE_SECONDS, and `koala-ingest reprocess` to stored events."""
    if clear and (free or work):
        raise fail("give --free/--work, or --clear, not both")
    with ops() as context:
        if clear or free or work:
            done = projects.set_company_domains(context, name, free or [], work or [])
        else:
            done = projects.get(context, name)
    if as_json:
        print_json({"name": done.name, "free": done.company_free_domains,
                    "work": done.company_work_domains})  # fmt: skip
        return
    typer.echo(f"{done.name}: free " + (" ".join(done.company_free_domains) or "(none)"))
    typer.echo(f"{done.name}: work " + (" ".join(done.company_work_domains) or "(none)"))


def _limit(value: str | None) -> int | None:
    if value is None or value == "default":
        return None
    if not value.isdigit():
        raise typer.BadParameter("a whole number of calls, 0 (no limit) or `default`")
    return int(value)


@app.command("set-limits")
def set_limits(
    name: str,
    rate: Annotated[
        str,
        typer.Option(
            "--rate",
            help="Calls per second (all receivers together); 0: no limit; `default`:"
            " KOALA_PROJECT_RATE_LIMIT.",
        ),
    ] = "default",
    queued: Annotated[
        str,
        typer.Option(
            "--queued",
            help="Calls waiting for the workers; 0: no limit; `default`:"
            " KOALA_PROJECT_QUEUE_LIMIT.",
        ),
    ] = "default",
) -> None:
    """Set the project's own limits: over them its requests are answered 429 +
    Retry-After (not counted received: its senders retry). Receivers apply them within
    KOALA_KEY_CACHE_SECONDS."""
    with ops() as context:
        done = projects.set_limits(context, name, _limit(rate), _limit(queued))

    def shown(value: int | None) -> str:
        return "default" if value is None else ("none" if value == 0 else str(value))

    typer.echo(f"{done.name}: rate {shown(done.rate_limit)}, queued {shown(done.queue_limit)}")


@app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a project's keys (the current one and a previous one in its grace): the
    receiver refuses them within KOALA_KEY_CACHE_SECONDS."""
    with ops() as context:
        projects.revoke(context, name)
    typer.echo(f"revoked {name}")


@contextmanager
def _bad_origin_exits_1() -> Iterator[None]:
    """A refused origin exits 1, as these commands did before the operations layer (an
    `Invalid` elsewhere exits 2): scripts may test it."""
    try:
        yield
    except Invalid as error:
        if error.code != "invalid_origin":
            raise
        raise fail(error.message) from None
