"""`stats`, `profiles`, `events`, `audiences`, `rejections`, `deletions`, `suppressions`:
what operators read (and `suppressions NAME --lift ID`, the one action among them)."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.table import Table

from ingest.commands.common import console, fail, ops, print_json
from ingest.operations import audiences, debugger, deletions, overview, profiles, rejections, stats

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LimitOpt = Annotated[int, typer.Option(min=1, max=1000)]
CursorOpt = Annotated[str | None, typer.Option(help="The `next` of the previous page.")]


def register(app: typer.Typer) -> None:
    for command in (overview_command, stats_command, profiles_command, events_command):
        app.command(command.__name__.removesuffix("_command"))(command)
    app.command("profile")(profile_command)
    app.command("debugger")(debugger_command)
    app.command("audiences")(audiences_command)
    app.command("rejections")(rejections_command)
    app.command("deletions")(deletions_command)
    app.command("suppressions")(suppressions_command)


def overview_command(as_json: JsonOpt = False) -> None:
    """Every project reconciled, the queue, the breaker and the workers alive (the console's
    overview)."""
    with ops() as context:
        out = overview.overview(context)
    if as_json:
        print_json(out)
        return
    table = Table("project", "received", "stored", "duplicates", "rejected", "dead letters",
                  "in flight", "last hour", title="overview")  # fmt: skip
    for p in out.projects:
        s = p.stats
        values = (s.received, s.stored, s.duplicates, s.rejected, s.dead_lettered, s.in_flight,
                  sum(p.calls_per_minute))  # fmt: skip
        table.add_row(s.project, *(f"{v:,}" for v in values))
    console.print(table)
    oldest = f"{out.oldest_queued_seconds:.1f} s" if out.oldest_queued_seconds is not None else "-"
    breaker = f"open: {out.breaker.reason}" if out.breaker.open else "closed"
    console.print(f"queue {out.queue_depth} (oldest {oldest}); breaker {breaker};"
                  f" workers alive {len(out.workers_alive)}")  # fmt: skip


def stats_command(name: str, as_json: JsonOpt = False) -> None:
    """Counts of a project: received = stored + duplicates + rejected + dead_lettered +
    in_flight."""
    with ops() as context:
        out = stats.stats(context, name)
    if as_json:
        print_json(out)
        return
    table = Table("count", "value", title=f"project {name}")
    for key, value in out.model_dump(exclude={"project"}).items():
        table.add_row(key, f"{value:,}" if value is not None else "")
    console.print(table)


def profiles_command(
    name: str,
    email: Annotated[str | None, typer.Option(help="Find by email.")] = None,
    profile_id: Annotated[str | None, typer.Option(help="Find by Koala profile_id.")] = None,
    user_id: Annotated[str | None, typer.Option(help="Find by Segment userId.")] = None,
    anonymous_id: Annotated[str | None, typer.Option(help="Find by anonymousId.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find a visitor profile by one identifier."""
    options = {"email": email, "profile_id": profile_id, "user_id": user_id,
               "anonymous_id": anonymous_id}  # fmt: skip
    given = {k: v for k, v in options.items() if v}
    if len(given) != 1:
        raise fail("give exactly one of --email, --profile-id, --user-id, --anonymous-id")
    [(kind, value)] = given.items()
    with ops() as context:
        found = profiles.find(context, name, kind, value)
    if as_json:
        print_json(found)
        return
    if not found.profiles:
        typer.echo("no profile")
    for p in found.profiles:
        table = Table("field", "value", title=f"profile {p.id}")
        for key in ("emails", "profile_ids", "user_ids", "anonymous_ids"):
            table.add_row(key, ", ".join(getattr(p, key)))
        table.add_row("accounts", ", ".join(a.domain or a.group_id or "" for a in p.accounts))
        table.add_row("traits", orjson.dumps(p.traits).decode())
        table.add_row("events", str(p.event_count))
        table.add_row("first / last seen", f"{p.first_seen} / {p.last_seen}")
        console.print(table)


def profile_command(name: str, profile: int) -> None:
    """One profile whole (JSON): identifiers, traits, companies, what merged into it and the
    merges the guard refused (the console draws it as a graph)."""
    with ops() as context:
        print_json(profiles.detail(context, name, profile))


def debugger_command(
    name: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as calls arrive.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """The latest calls of a project with their outcome (stored, duplicate, rejected, dead
    letter), oldest first, as the console's live debugger shows them; --follow tails it."""
    import time

    after = None
    with ops() as context:
        while True:
            found = debugger.recent(context, name, debugger.Query(after=after, limit=limit))
            for c in found.calls:
                why = f" ({c.code})" if c.code else ""
                typer.echo(f"{c.at:%H:%M:%S} {c.outcome}{why} {c.type or ''} {c.event or ''}"
                           f" {c.message_id or ''}")  # fmt: skip
            after = found.last or after
            if not follow:
                return
            time.sleep(1)


def events_command(
    name: str,
    profile: int,
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A profile's latest events, newest first."""
    with ops() as context:
        page = profiles.events_of(context, name, profile, limit, cursor)
    if as_json:
        print_json(page)
        return
    table = Table("timestamp", "type", "event / name", "message id", title=f"profile {profile}")
    for e in page.items:
        table.add_row(e.timestamp.isoformat(), e.type, e.event or e.name or "", e.message_id)
    console.print(table)
    _more(page.next)


def audiences_command(
    name: str,
    key: Annotated[str | None, typer.Argument(help="An audience: list its members.")] = None,
    state: Annotated[
        str, typer.Option(help="With KEY: entered (members now), exited or all.")
    ] = "entered",
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Engage audiences of a project with their members now; with KEY, that audience's
    profiles (a profile's dated transitions: `koala-ingest profile NAME ID`)."""
    if state not in ("entered", "exited", "all"):
        raise fail("--state is one of entered, exited, all")
    if key is None:
        with ops() as context:
            found = audiences.find(context, name, audiences.Query(limit=limit, cursor=cursor))
        if as_json:
            print_json(found)
            return
        table = Table("audience", "members", "profiles ever", "last change", "computation",
                      "space", title=f"audiences in {name}")  # fmt: skip
        for a in found.items:
            table.add_row(a.key, f"{a.members:,}", f"{a.profiles:,}", a.last_change.isoformat(),
                          a.computation_id or "", a.space_id or "")  # fmt: skip
        console.print(table)
        _more(found.next)
        return
    with ops() as context:
        page = audiences.members(
            context,
            name,
            key,
            audiences.MembersQuery(state=state, limit=limit, cursor=cursor),  # type: ignore[arg-type]
        )
    if as_json:
        print_json(page)
        return
    table = Table("profile", "member", "since", "last change", title=f"audience {key} in {name}")
    for m in page.items:
        table.add_row(str(m.profile_id), "yes" if m.member else "no",
                      m.since.isoformat() if m.since else "", m.changed_at.isoformat())  # fmt: skip
    console.print(table)
    _more(page.next)


def rejections_command(
    name: str,
    code: Annotated[str | None, typer.Option(help="Only this code.")] = None,
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Calls refused for their content, newest first, with the body as received."""
    with ops() as context:
        page = rejections.find(
            context, name, rejections.Query(code=code, limit=limit, cursor=cursor)
        )
    if as_json:
        print_json(page)
        return
    table = Table(
        "id", "received", "source", "index", "code", "message", title=f"rejections in {name}"
    )
    for r in page.items:
        table.add_row(str(r.id), f"{r.received_at:%Y-%m-%d %H:%M:%S}", r.source,
                      "" if r.index is None else str(r.index), r.code, r.message[:60])  # fmt: skip
    console.print(table)
    _more(page.next)


def deletions_command(
    name: str, limit: LimitOpt = 20, cursor: CursorOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete calls carried out in a project, newest first: what each named and erased."""
    with ops() as context:
        page = deletions.find(context, name, deletions.Query(limit=limit, cursor=cursor))
    if as_json:
        print_json(page)
        return
    table = Table(
        "deleted at", "identifiers", "profiles", "events", "letters + rejections",
        title=f"deletions in {name}",
    )  # fmt: skip
    for d in page.items:
        table.add_row(str(d.deleted_at), ", ".join(d.identifiers), str(d.profiles),
                      str(d.events), f"{d.dead_letters} + {d.rejections}")  # fmt: skip
    console.print(table)
    _more(page.next)


def suppressions_command(
    name: str,
    lift: Annotated[
        int | None,
        typer.Option(
            help="Lift this deletion's suppression (its id): calls naming it are taken again."
        ),
    ] = None,
    limit: LimitOpt = 20,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deletions suppressing calls now (KOALA_SUPPRESS_DAYS after each): later calls naming
    their identifiers are refused as `suppressed`. --lift ID ends one early (audited)."""
    if lift is not None:
        with ops() as context:
            lifted = deletions.lift(context, name, lift)
        if as_json:
            print_json(lifted)
        else:
            typer.echo(f"{name}: suppression of deletion {lifted.id} lifted")
        return
    with ops() as context:
        page = deletions.list_suppressions(
            context, name, deletions.Query(limit=limit, cursor=cursor)
        )
    if as_json:
        print_json(page)
        return
    table = Table("id", "deleted at", "until", "identifiers", title=f"suppressions in {name}")
    for d in page.items:
        table.add_row(str(d.id), f"{d.deleted_at:%Y-%m-%d %H:%M:%S}",
                      f"{d.until:%Y-%m-%d %H:%M:%S}", ", ".join(d.identifiers))  # fmt: skip
    console.print(table)
    _more(page.next)


def _more(cursor: str | None) -> None:
    if cursor:
        console.print(f"more: --cursor {cursor}")
