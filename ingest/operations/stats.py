"""Stats and reconciliation of a project: every call received is accounted for.

received = stored + duplicates + rejected + dead_lettered + in_flight

`received` is counted by the receiver in Redis as it queues calls; the rest by the workers
in PostgreSQL in the same transaction as the rows. `in_flight` is what was received and
not yet finished: queued, or in a worker's hands.
"""

from __future__ import annotations

import psycopg
from pydantic import BaseModel, Field

from ingest.operations.context import Ops
from ingest.store import counters
from ingest.store.projects import Project


def received_key(prefix: str) -> str:
    """The Redis hash where the receiver counts calls received, per project id."""
    return prefix + "received"


class Stats(BaseModel):
    project: str
    received: int = Field(description="Calls the receiver queued (counted in Redis).")
    stored: int
    duplicates: int = Field(description="Calls whose messageId was already stored.")
    conflicting_duplicates: int = Field(
        description="Of the duplicates, those whose content differed from the stored call."
    )
    rejected: int
    dead_lettered: int
    in_flight: int = Field(
        description="received - (stored + duplicates + rejected + dead_lettered)"
    )
    queue_depth: int | None = Field(
        default=None, description="Batches waiting in the calls queue (all projects)."
    )


def counts(conn: psycopg.Connection, project: Project, received: int) -> Stats:
    """The reconciliation from a `received` count already read (tests and the benchmark
    read it themselves)."""
    done = counters.get(conn, project.id)
    finished = done["stored"] + done["duplicates"] + done["rejected"] + done["dead_lettered"]
    return Stats(
        project=project.name,
        received=received,
        stored=done["stored"],
        duplicates=done["duplicates"],
        conflicting_duplicates=done["conflicting_duplicates"],
        rejected=done["rejected"],
        dead_lettered=done["dead_lettered"],
        in_flight=received - finished,
    )


def stats(ops: Ops, name: str) -> Stats:
    project = ops.project(name)
    prefix = ops.settings.redis_key_prefix
    received = ops.redis.hget(received_key(prefix), str(project.id))
    out = counts(ops.conn, project, int(received or 0))
    out.queue_depth = int(ops.redis.llen(ops.settings.queue_key))
    return out
