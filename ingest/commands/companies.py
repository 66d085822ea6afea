"""`companies list` and `companies show`: company activity (the admin API's
/companies routes and the console's companies page read the same operations)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from ingest.commands.common import console, fail, ops, print_json
from ingest.operations import companies

app = typer.Typer(help="Company activity: who is active, and their intent signals.",
                  no_args_is_help=True)  # fmt: skip

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SinceOpt = Annotated[
    str | None, typer.Option(help="First UTC day, YYYY-MM-DD (default: 7 days back).")
]
UntilOpt = Annotated[
    str | None, typer.Option(help="The UTC day after the last (default: tomorrow).")
]


def _model(model: type[Any], **values: Any) -> Any:
    try:
        return model(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(f"{where + ': ' if where else ''}{first['msg']}", 2) from None


def _signals(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(values.items()))


@app.command("list")
def list_command(
    name: str,
    since: SinceOpt = None,
    until: UntilOpt = None,
    rank: Annotated[
        str, typer.Option(help="`activity` (events) or `signal:NAME` (e.g. signal:pricing).")
    ] = "activity",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The `next` of the previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Companies active in a window of UTC days, most active first."""
    query = _model(companies.Query, since=since, until=until, rank=rank, limit=limit,
                   cursor=cursor)  # fmt: skip
    with ops() as context:
        page = companies.ranked(context, name, query)
    if as_json:
        print_json(page)
        return
    table = Table("id", "company", "visitors", "identified", "events", "page views", "signals",
                  "last active", title=f"companies in {name}, {page.since} to {page.until}"
                  f" (excl.), by {page.rank}")  # fmt: skip
    for c in page.items:
        table.add_row(str(c.company.id), c.company.name or c.company.domain or
                      c.company.group_id or "", str(c.visitors), str(c.identified),
                      f"{c.events:,}", f"{c.page_views:,}", _signals(c.signals),
                      str(c.last_active))  # fmt: skip
    console.print(table)
    if page.next:
        typer.echo(f"more: --cursor {page.next}")


@app.command("show")
def show_command(
    name: str,
    company: int,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One company: its days, visitors, signals and recent page views."""
    window = _model(companies.Window, since=since, until=until)
    with ops() as context:
        out = companies.detail(context, name, company, window)
    if as_json:
        print_json(out)
        return
    c = out.company
    merged = f" (company {out.asked} was merged into it)" if out.merged_into else ""
    console.print(f"company {c.id}: {c.name or c.domain or c.group_id}{merged};"
                  f" domains {', '.join(out.domains) or '-'}")  # fmt: skip
    days = Table("day", "visitors", "identified", "events", "page views", "signals",
                 "top paths", title=f"{out.since} to {out.until} (excl.)")  # fmt: skip
    for d in out.days:
        days.add_row(str(d.day), str(d.visitors), str(d.identified), str(d.events),
                     str(d.page_views), _signals(d.signals),
                     ", ".join(f"{p.path} {p.views}" for p in d.top_paths))  # fmt: skip
    console.print(days)
    visitors = Table("profile", "email", "events", "page views", "signals", "last day",
                     title="visitors")  # fmt: skip
    for v in out.visitors:
        visitors.add_row(str(v.profile_id), v.email or "(anonymous)", str(v.events),
                         str(v.page_views), _signals(v.signals), str(v.last_day))  # fmt: skip
    console.print(visitors)
    views = Table("time", "profile", "path", "title", title="recent page views")
    for p in out.recent_page_views:
        views.add_row(f"{p.timestamp:%Y-%m-%d %H:%M:%S}", str(p.profile_id), p.path or "",
                      p.title or "")  # fmt: skip
    console.print(views)
