"""`breaker`: the dead-letter circuit breaker (ingest/operations/breaker.py)."""

from __future__ import annotations

import typer

from ingest.commands.common import ops
from ingest.operations import breaker

app = typer.Typer(help="The dead-letter circuit breaker.", no_args_is_help=True)


@app.command("status")
def status() -> None:
    """Is the breaker open, and why."""
    with ops() as context:
        state = breaker.state(context)
    typer.echo(f"open: {state.reason}" if state.open else "closed")


@app.command("reset")
def reset() -> None:
    """Close the breaker now (after fixing the cause)."""
    with ops() as context:
        was = breaker.state(context)
        breaker.reset(context)
    typer.echo("closed" if was.open else "it was closed")
