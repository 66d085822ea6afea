"""`koala-ingest audit`: the audit log, newest first (ingest/operations/audit.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ingest.commands.common import console, ops, print_json
from ingest.operations import audit as operations
from ingest.operations import paging

SUMMARY_WIDTH = 80

app = typer.Typer(help="The audit log: who changed what, when, how many.")


@app.callback(invoke_without_command=True)
def audit(
    project: Annotated[str | None, typer.Option(help="Only this project's entries.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action (dead_letters.replay, token.create...).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=paging.MAX_LIMIT, help="At most this many entries.")
    ] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue where a previous listing stopped.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON page.")] = False,
) -> None:
    """The audit log, newest first: every action that changed something."""
    with ops() as context:
        page = operations.list_entries(context, limit, cursor, project, action)
    if as_json:
        print_json(page)
        return
    table = Table()
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("at", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("project")
    table.add_column("selection", overflow="fold", ratio=1)
    table.add_column("count", no_wrap=True, justify="right")
    for e in page.items:
        table.add_row(
            str(e.id),
            f"{e.at:%Y-%m-%d %H:%M}",
            e.actor,
            e.action,
            e.project or "(all)",
            summary(e.selection),
            "" if e.count is None else str(e.count),
        )
    console.print(table)
    if page.next:
        typer.echo(f"more: --cursor {page.next}")


def summary(selection: dict[str, Any], width: int = SUMMARY_WIDTH) -> str:
    """`key=value ...`, cut at `width` characters (`--json` shows it whole)."""
    text = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in selection.items())
    return text if len(text) <= width else text[: width - 1] + "…"
