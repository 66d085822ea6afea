"""What every command shares: settings, a connection, the operations context, printing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import orjson
import psycopg
import typer
from pydantic import BaseModel
from rich.console import Console

from ingest import logs
from ingest.config import ConfigError, Settings, get_settings
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid, OperationError

console = Console()


def settings() -> Settings:
    found = get_settings()
    logs.configure(found.log_level, found.log_format)
    return found


def database_url(found: Settings) -> str:
    try:
        return found.require_database_url()
    except ConfigError as error:
        typer.echo(f"koala-ingest: {error}", err=True)
        raise typer.Exit(2) from None


def connect(found: Settings, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection for a command, with the settings' psycopg options."""
    return psycopg.connect(database_url(found), autocommit=autocommit, **found.connection_options)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"koala-ingest: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def ops() -> Iterator[Ops]:
    """An operations context acting as this shell's user (an operator of every project);
    an `OperationError` ends the command with its message."""
    found = settings()
    with connect(found, autocommit=True) as conn:
        context = Ops(conn, found, cli_actor())
        try:
            yield context
        except OperationError as error:
            raise_for(error)
        finally:
            context.close()


def raise_for(error: OperationError) -> NoReturn:
    raise fail(error.message, 2 if isinstance(error, Invalid) else 1) from None


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
