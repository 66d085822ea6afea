"""`reprocess` and `jobs`: reprocessing and scheduled runs (ingest/operations/jobs.py).

Running a job in this process (`reprocess` without --background, `jobs run`) composes the
workers' job runner: this module, like the process commands, imports `workers`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from ingest.commands.common import connect, console, fail, ops, print_json, settings
from ingest.config import Settings
from ingest.jobkinds import RUN_NOW
from ingest.operations import jobs as job_ops
from ingest.operations.errors import Invalid, OperationError

app = typer.Typer(
    help="Job runs (reprocessing, scheduled jobs): list, show, cancel, run now.",
    invoke_without_command=True,
)


def _run_with_progress(found: Settings, job_id: int, label: str) -> str:
    """Run a job in this process with a progress bar; Ctrl-C leaves it resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ingest import redis_clients
    from ingest.identifiers import Rules
    from ingest.store import jobs
    from workers.jobs import Context, Step
    from workers.jobs.runner import Runner

    with connect(found, autocommit=True) as conn:
        row = jobs.get(conn, job_id)
    assert row is not None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    context = Context(
        found, Rules.of(found),
        lambda: redis_clients.sync_client(found.require_redis_url()),
    )  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=row["total"], completed=row["done"])

        def advance(step: Step, total: int | None) -> None:
            bar.update(task, total=total, advance=step.done)

        runner = Runner(lambda: connect(found), context, on_step=advance)
        try:
            return runner.run(job_id)
        except KeyboardInterrupt:
            bar.stop()
            typer.echo(f"interrupted: job {job_id} resumes where it stopped when the same"
                       " command runs again")  # fmt: skip
            raise typer.Exit(130) from None


def _summary(job: job_ops.Job) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(job.counts.items())) or "nothing"
    total = f"/{job.total}" if job.total is not None else ""
    return f"job {job.id} {job.status}: {job.done}{total} done; {counts}"


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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the events in the range; start nothing.")
    ] = False,
) -> None:
    """Normalize and resolve a project's stored events in a time range again, with today's
    rules: derived fields overwritten, profiles re-attributed, nothing duplicated. The same
    command resumes an interrupted run from its cursor."""
    from ingest import reprocessing

    try:
        request = job_ops.ReprocessRequest(
            since=reprocessing.parse_time(since), until=reprocessing.parse_time(until),
            batch_size=batch_size, restart=restart, dry_run=dry_run,
        )  # fmt: skip
    except ValueError as error:
        raise fail(f"--since/--until: {error}", 2) from None
    with ops() as context:
        try:
            started = job_ops.start_reprocess(context, name, request, "cli", queue=background)
        except OperationError as error:
            if error.code == "job_active":
                raise fail(f"{error.message} (koala-ingest jobs show ...)") from None
            raise
    if started.dry_run:
        typer.echo(f"{started.events} events in the range; dry run, nothing started")
        return
    job_id = started.job_id
    assert job_id is not None
    typer.echo(f"{'resuming' if started.resumed else 'started'} job {job_id}")
    if background:
        typer.echo(f"queued for the workers; follow it with: koala-ingest jobs show {job_id}")
        return
    found = settings()
    status = _run_with_progress(found, job_id, f"reprocessing {name}")
    if status == "busy":
        raise fail(f"job {job_id} is being run by a worker; follow it with:"
                   f" koala-ingest jobs show {job_id}")  # fmt: skip
    with ops() as context:
        typer.echo(_summary(job_ops.get(context, job_id)))
    if status not in ("done", "cancelled"):
        raise typer.Exit(1)


@app.callback()
def list_jobs(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option(help="reprocess, auto_replay, expire or identity_check.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="The `next` of the previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recent job runs, newest first: when, what, progress, counts, errors."""
    if ctx.invoked_subcommand is not None:
        return
    with ops() as context:
        try:
            query = job_ops.Query(kind=kind, limit=limit, cursor=cursor)
        except ValueError as error:
            raise Invalid("invalid_kind", str(error)) from None
        page = job_ops.find(context, query)
    if as_json:
        print_json(page)
        return
    table = Table("id", "kind", "project", "trigger", "status", "done/total", "started",
                  "finished", "counts", "errors")  # fmt: skip
    for j in page.items:
        table.add_row(
            str(j.id), j.kind, j.project or "", j.trigger, j.status,
            f"{j.done}/{j.total if j.total is not None else '?'}",
            _when(j.started_at), _when(j.finished_at),
            ", ".join(f"{k} {v}" for k, v in sorted(j.counts.items())), str(len(j.errors)),
        )  # fmt: skip
    console.print(table)
    if page.next:
        console.print(f"more: --cursor {page.next}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


@app.command("show")
def show(job_id: int) -> None:
    """One job run in full (JSON): parameters, progress, cursor, counts, errors."""
    with ops() as context:
        print_json(job_ops.get(context, job_id))


@app.command("cancel")
def cancel(job_id: int) -> None:
    """Cancel a job: at once if it is not running, at its next step if it is."""
    with ops() as context:
        done = job_ops.cancel(context, job_id)
    typer.echo(f"job {job_id}: {'cancel requested' if done.status == 'running' else done.status}")


@app.command("run")
def run(kind: Annotated[str, typer.Argument(help=", ".join(RUN_NOW) + ".")]) -> None:
    """Run a scheduled job now, in this process (recorded like a scheduled run)."""
    from ingest.store import jobs
    from workers.jobs import kinds

    if kind not in RUN_NOW:
        raise fail(f"no scheduled job {kind!r}: one of {', '.join(RUN_NOW)}", 2)
    found = settings()
    with ops() as context:
        context.actor.check_acts(None)
        try:
            job_id = jobs.create(
                context.conn, kind, None, kinds.params_for(kind, context.conn, found), "cli"
            )
        except jobs.JobConflict as conflict:
            raise fail(f"job {conflict.active_id} ({kind}) is running already") from None
        context.record("job.run", None, {"kind": kind, "job_id": job_id}, None)
    status = _run_with_progress(found, job_id, kind)
    with ops() as context:
        typer.echo(_summary(job_ops.get(context, job_id)))
    if status != "done":
        raise typer.Exit(1)
