"""The `reprocess` job kind: a project's stored events through today's rules again
(workers/reprocess.py does one batch). Started by the API, the CLI or the schedule through
ingest/reprocessing.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import psycopg

from ingest.identifiers import Rules
from ingest.reprocessing import parse_time
from ingest.store import events
from workers.jobs.base import Context, Job, Step
from workers.reprocess import reprocess


@dataclass(slots=True)
class ReprocessJob:
    """A project's events with `since <= timestamp < until`, a batch at a time in
    (timestamp, id) order; the cursor is the last (timestamp, id) done."""

    kind: ClassVar[str] = "reprocess"
    project_id: int
    since: datetime
    until: datetime
    batch_size: int
    rules: Rules

    def total(self, conn: psycopg.Connection) -> int | None:
        return events.count_in_range(conn, self.project_id, self.since, self.until)

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        after = (parse_time(cursor[0]), int(cursor[1])) if cursor else None
        rows = events.in_range(
            conn, self.project_id, self.since, self.until, after, self.batch_size
        )
        if not rows:
            return Step(cursor, finished=True)
        outcome = reprocess(conn, self.project_id, rows, self.rules)
        last = rows[-1]
        return Step(
            [last["timestamp"].isoformat(), last["id"]],
            done=len(rows),
            counts=outcome.counts,
            errors=outcome.errors,
            finished=len(rows) < self.batch_size,
        )


def build(row: dict[str, Any], ctx: Context) -> Job:
    params = row["params"]
    return ReprocessJob(
        project_id=int(row["project_id"]),
        since=parse_time(params["since"]),
        until=parse_time(params["until"]),
        batch_size=int(params.get("batch_size") or ctx.settings.reprocess_batch_size),
        rules=Rules.from_params(params["rules"]) if "rules" in params else ctx.rules,
    )
