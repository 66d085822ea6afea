"""The `koala-ingest` command: every process and every operator action starts here.

One module per command group in `ingest/commands/`; operator commands call the operations
layer (`ingest/operations/`), the same functions as the admin API and the console."""

from __future__ import annotations

from typing import Annotated

import orjson
import psycopg
import typer
from rich.table import Table

from ingest.commands import audit, breaker, dlq, jobs, processes, reports, tokens
from ingest.commands.common import connect, console, fail, settings
from ingest.store import projects

app = typer.Typer(
    help="koala-ingest: Segment calls in, visitors, companies and events out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
projects_app = typer.Typer(help="Projects (sources) and their public keys.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(dlq.app, name="dlq")
app.add_typer(jobs.app, name="jobs")
app.add_typer(breaker.app, name="breaker")
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")
app.command("reprocess")(jobs.reprocess)
reports.register(app)
for command in processes.app.registered_commands:
    app.registered_commands.append(command)


@projects_app.command("create")
def projects_create(
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
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Create a project and print its public key (the Segment write key)."""
    origins = _origins(allowed_origin) if allowed_origin else None
    with connect(settings()) as conn:
        try:
            project = projects.create(conn, name, webhook_secret, origins)
        except projects.ProjectExists:
            raise fail(f"a project named {name!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise fail("a project name is 1-100 letters, digits, '.', '_' or '-'") from None
    if as_json:
        typer.echo(
            orjson.dumps(
                {"id": project.id, "name": project.name, "public_key": project.public_key}
            ).decode()
        )
    else:
        typer.echo(f"created project {project.name}; public key: {project.public_key}")


@projects_app.command("list")
def projects_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List active projects and their public keys."""
    with connect(settings()) as conn:
        rows = projects.list_active(conn)
    if as_json:
        typer.echo(
            orjson.dumps(
                [
                    {
                        "id": p.id,
                        "name": p.name,
                        "public_key": p.public_key,
                        "webhook_secret": bool(p.webhook_secret),
                        "allowed_origins": p.allowed_origins,
                    }
                    for p in rows
                ]
            ).decode()
        )
        return
    table = Table("id", "name", "public key", "webhook secret", "allowed origins")
    for p in rows:
        table.add_row(
            str(p.id),
            p.name,
            p.public_key,
            "yes" if p.webhook_secret else "no",
            " ".join(p.allowed_origins) if p.allowed_origins is not None else "any",
        )
    console.print(table)


@projects_app.command("origins")
def projects_origins(
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
    wanted = None if any_origin else _origins(origin or [])
    with connect(settings()) as conn:
        if not projects.set_allowed_origins(conn, name, wanted):
            raise fail(f"no active project named {name!r}")
    typer.echo(f"{name}: calls from " + (" ".join(wanted) if wanted else "any origin"))


def _origins(given: list[str]) -> list[str]:
    from ingest.cors import InvalidOrigin, normalize_origins

    try:
        return list(normalize_origins(given))
    except InvalidOrigin as error:
        raise fail(str(error)) from None


@projects_app.command("revoke")
def projects_revoke(name: str) -> None:
    """Revoke a project's key: the receiver refuses it within KOALA_KEY_CACHE_SECONDS."""
    with connect(settings()) as conn:
        if not projects.revoke(conn, name):
            raise fail(f"no active project named {name!r}")
    typer.echo(f"revoked {name}")


def _project(conn: psycopg.Connection, name: str) -> projects.Project:
    found = projects.get_by_name(conn, name)
    if found is None:
        raise fail(f"no project named {name!r}")
    return found


def main() -> None:
    app()


if __name__ == "__main__":
    main()
