"""The `dead_letters` table: calls that could not be stored, with their payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ingest.store._json import jsonb


@dataclass(frozen=True, slots=True)
class DeadLetter:
    project_id: int
    message_id: str | None
    payload: dict[str, Any]
    stage: str
    reason: str
    error: str
    traceback: str | None


def insert(conn: psycopg.Connection, letters: list[DeadLetter]) -> None:
    if not letters:
        return
    with conn.cursor().copy(
        "COPY dead_letters (project_id, message_id, payload, stage, reason, error, traceback)"
        " FROM STDIN"
    ) as copy:
        for d in letters:
            copy.write_row(
                (
                    d.project_id,
                    d.message_id,
                    jsonb(d.payload),
                    d.stage,
                    d.reason,
                    d.error,
                    d.traceback,
                )
            )
