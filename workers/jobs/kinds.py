"""How each job kind declared in ingest/jobkinds.py runs: its builder (a job row -> a `Job`)
and the parameters a new run is given (fixed when the run is created). One table; the
runner, the schedule and the CLI read it, and importing it fails at once if a declared
kind has no runner here or a runner has no declaration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ingest.config import Settings
from ingest.jobkinds import AUTO_REPLAY, EXPIRE, IDENTITY_CHECK, KINDS, REPROCESS
from workers.jobs import maintenance, reprocessing
from workers.jobs.base import Builder, Context, Job


@dataclass(frozen=True, slots=True)
class Implementation:
    build: Builder
    # a new run's parameters; None: given by whoever starts it (a reprocessing's range)
    params: Callable[[psycopg.Connection, Settings], dict[str, Any]] | None = None


IMPLEMENTATIONS: dict[str, Implementation] = {
    AUTO_REPLAY.name: Implementation(maintenance.build_auto_replay, maintenance.params_auto_replay),
    EXPIRE.name: Implementation(maintenance.build_expire, maintenance.params_expire),
    IDENTITY_CHECK.name: Implementation(
        maintenance.build_identity_check, maintenance.params_identity_check
    ),
    REPROCESS.name: Implementation(reprocessing.build),
}
if set(IMPLEMENTATIONS) != set(KINDS):  # pragma: no cover - a developer's mistake, at import
    raise RuntimeError(
        f"job kinds declared {sorted(KINDS)} but implemented {sorted(IMPLEMENTATIONS)}"
    )


def build(row: dict[str, Any], ctx: Context) -> Job:
    """The job a row of the `jobs` table describes."""
    return IMPLEMENTATIONS[row["kind"]].build(row, ctx)


def params_for(kind: str, conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    """A new run's parameters, for the kinds that fix their own."""
    params = IMPLEMENTATIONS[kind].params
    if params is None:
        raise KeyError(f"{kind} runs are given their parameters by whoever starts them")
    return params(conn, settings)
