"""`koala-ingest tokens`: API tokens with a role (ingest/operations/tokens.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ingest.commands.common import console, ops, print_json
from ingest.operations import paging
from ingest.operations import tokens as operations
from ingest.operations.actor import ROLES
from ingest.operations.paging import Page

app = typer.Typer(
    help="API tokens of the admin API and the console: a role (viewer reads, operator acts),"
    " optionally limited to some projects.",
    no_args_is_help=True,
)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="1-100 letters, digits, '.', '_' or '-'.")],
    role: Annotated[str, typer.Option(help=" or ".join(ROLES) + ".")],
    project: Annotated[
        list[str] | None,
        typer.Option(help="Limit the token to this project (repeat it). None: every project."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Create a token and print it: it is shown this once (only its hash is kept)."""
    with ops() as context:
        created = operations.create(context, name, role, project or None)
    if as_json:
        print_json(created)
        return
    scope = ", ".join(created.projects) if created.projects is not None else "every project"
    typer.echo(f"created token {created.name}: {created.role} of {scope}")
    typer.echo(created.token)
    typer.echo(
        "This is the only time the token is printed: it is not shown again. Send it as"
        " 'Authorization: Bearer <token>'."
    )


@app.command("list")
def list_(
    include_revoked: Annotated[bool, typer.Option("--all", help="Revoked tokens too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List tokens (never their secrets, which are not kept)."""
    found: list[operations.TokenInfo] = []
    with ops() as context:
        page: Page[operations.TokenInfo] | None = None
        while page is None or page.next is not None:
            page = operations.list_tokens(
                context, paging.MAX_LIMIT, page.next if page else None, include_revoked
            )
            found.extend(page.items)
    if as_json:
        print_json([t.model_dump(mode="json") for t in found])
        return
    table = Table()
    table.add_column("name", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("projects", overflow="fold")
    table.add_column("created", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("last used", no_wrap=True)
    if include_revoked:
        table.add_column("revoked", no_wrap=True)
    for t in found:
        row = [
            t.name,
            t.role,
            ", ".join(t.projects) if t.projects is not None else "all",
            f"{t.created_at:%Y-%m-%d}",
            t.created_by,
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
        ]
        if include_revoked:
            row.append(f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "")
        table.add_row(*row)
    console.print(table)


@app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a token: refused from its next request on."""
    with ops() as context:
        operations.revoke(context, name)
    typer.echo(f"revoked token {name}")
