"""`dlq`: dead letters: list, show, replay, discard, reset (ingest/operations/dead_letters)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.table import Table

from ingest.commands.common import console, fail, ops, print_json
from ingest.operations import dead_letters as letters

app = typer.Typer(help="Dead letters: inspect, replay, discard.", no_args_is_help=True)

IdsArg = Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")]
ProjectOpt = Annotated[str | None, typer.Option(help="Project name (else every project).")]
ReasonOpt = Annotated[str | None, typer.Option(help="Reason code.")]
StageOpt = Annotated[str | None, typer.Option(help="Stage that failed.")]
SinceOpt = Annotated[datetime | None, typer.Option(help="Failed at or after (ISO-8601).")]
UntilOpt = Annotated[datetime | None, typer.Option(help="Failed before (ISO-8601).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every pending letter (of --project).")]
UpToOpt = Annotated[
    int | None,
    typer.Option(help="Only letters up to this id: the dry run's bound, so nothing newer."),
]


def _model(model: Any, **fields: Any) -> Any:
    """A request model from the options; its refusal in one line (as the API's 400)."""
    try:
        return model(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as error:
        from ingest.api.endpoint import describe

        raise fail(describe(error), 2) from None


@app.command("list")
def list_letters(
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
    stage: StageOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    status: Annotated[str, typer.Option(help="pending, replaying, replayed, discarded, all")] = (
        "pending"
    ),
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="The `next` of the previous page.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dead letters, oldest first, with counts by reason and stage."""
    query = _model(letters.Query, reason=reason, stage=stage, status=status, since=since,
                   until=until, limit=limit, cursor=cursor)  # fmt: skip
    with ops() as context:
        page = letters.find(context, project, query)
    if as_json:
        print_json(page)
        return
    table = Table(
        "id", "message id", "reason", "stage", "attempts", "status", "last failed", "error"
    )
    for r in page.items:
        table.add_row(str(r.id), r.message_id or "", r.reason, r.stage, str(r.attempts),
                      r.status, f"{r.last_failed_at:%Y-%m-%d %H:%M:%S}",
                      (r.error or "")[:60])  # fmt: skip
    console.print(table)
    counts = ", ".join(f"{c.reason}/{c.stage} {c.count}" for c in page.counts) or "none"
    console.print("by reason/stage: " + counts)
    if page.next:
        console.print(f"more: --cursor {page.next}")


@app.command("show")
def show(letter_id: int, project: ProjectOpt = None) -> None:
    """One dead letter: payload, error and traceback."""
    with ops() as context:
        print_json(letters.get(context, project, letter_id))


@app.command("replay")
def replay(
    ids: IdsArg = None,
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
    stage: StageOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    every: AllOpt = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed.")] = (
        False
    ),
    rate: Annotated[float | None, typer.Option(help="At most this many calls a second.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100_000,
    payload: Annotated[
        Path | None, typer.Option(help="A corrected payload (JSON file) for one id.")
    ] = None,
    up_to_id: UpToOpt = None,
) -> None:
    """Send pending dead letters through the pipeline again: by ids, by a filter, or --all."""
    from rich.progress import Progress

    if not ids and not project:
        raise fail("give dead letter ids, or --project with a filter or --all")
    corrected = orjson.loads(payload.read_bytes()) if payload is not None else None
    request = _model(letters.ReplayRequest, ids=ids or None, reason=reason, stage=stage,
                     since=since, until=until, all=every or None, dry_run=dry_run,
                     limit=limit, payload=corrected, up_to_id=up_to_id)  # fmt: skip
    with ops() as context:
        if dry_run or corrected is not None:
            done = letters.replay(context, project, request)
            for r in done.preview:
                typer.echo(f"would replay {r.id} ({r.reason}, {r.message_id})")
            if dry_run:
                bound = f"; confirm with --up-to-id {done.last_id}" if done.last_id else ""
                typer.echo(f"matched {done.matched}; dry run, nothing replayed{bound}")
                return
        else:
            dry = letters.replay(context, project, request.model_copy(update={"dry_run": True}))
            total = dry.matched
            if request.up_to_id is None and dry.last_id is not None:
                # the bar's total is what the run takes: nothing that fails meanwhile
                request = request.model_copy(update={"up_to_id": dry.last_id})
            with Progress(console=console) as bar:
                task = bar.add_task("replaying", total=total)
                done = letters.replay_with_progress(
                    context, project, request, rate, lambda n: bar.advance(task, n)
                )
    typer.echo(f"matched {done.matched}, replayed {done.replayed}")


@app.command("discard")
def discard(
    ids: IdsArg = None,
    project: ProjectOpt = None,
    reason: ReasonOpt = None,
    stage: StageOpt = None,
    every: AllOpt = False,
    up_to_id: UpToOpt = None,
) -> None:
    """Mark pending dead letters discarded (they stay visible as discarded)."""
    if not ids and not project:
        raise fail("give dead letter ids, or --project with a filter or --all")
    selection = _model(letters.Selection, ids=ids or None, reason=reason, stage=stage,
                       all=every or None, up_to_id=up_to_id)  # fmt: skip
    with ops() as context:
        done = letters.discard(context, project, selection)
    typer.echo(f"discarded {done.count}")


@app.command("reset")
def reset(
    ids: IdsArg = None,
    project: ProjectOpt = None,
    older_than: Annotated[
        int | None, typer.Option(help="Only letters whose replay was sent this many seconds ago.")
    ] = None,
) -> None:
    """Put dead letters stuck in `replaying` (their replay message was lost) back to
    `pending`; the hourly expire job does it after KOALA_REPLAY_STUCK_SECONDS. See them with
    `dlq list --status replaying`."""
    if not ids and not project:
        raise fail("give dead letter ids, or --project")
    request = _model(letters.ResetRequest, ids=ids or None, all=None if ids else True,
                     older_than_seconds=older_than)  # fmt: skip
    with ops() as context:
        done = letters.reset(context, project, request)
    typer.echo(f"reset {done.count} to pending")
