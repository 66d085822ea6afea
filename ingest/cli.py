"""The `koala-ingest` command: every process and every operator action starts here.

One module per command group in `ingest/commands/`; operator commands call the operations
layer (`ingest/operations/`), the same functions as the admin API and the console."""

from __future__ import annotations

import typer

from ingest.commands import (
    audit,
    breaker,
    companies,
    dlq,
    jobs,
    processes,
    projects,
    reports,
    tokens,
)

app = typer.Typer(
    help="koala-ingest: Segment calls in, visitors, companies and events out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(projects.app, name="projects")
app.add_typer(dlq.app, name="dlq")
app.add_typer(jobs.app, name="jobs")
app.add_typer(breaker.app, name="breaker")
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")
app.add_typer(companies.app, name="companies")
app.command("reprocess")(jobs.reprocess)
reports.register(app)
for command in processes.app.registered_commands:
    app.registered_commands.append(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
