"""The `rejections` table: calls the receiver refused for their content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True, slots=True)
class RejectionRow:
    project_id: int
    received_at: str
    source: str
    index: int | None
    code: str
    message: str
    payload: str


def insert(conn: psycopg.Connection, rows: list[RejectionRow]) -> None:
    if not rows:
        return
    with conn.cursor().copy(
        "COPY rejections (project_id, received_at, source, item_index, code, message, payload)"
        " FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row(
                (r.project_id, r.received_at, r.source, r.index, r.code, r.message, r.payload)
            )


def recent(conn: psycopg.Connection, project_id: int, limit: int) -> list[tuple[object, ...]]:
    cur = conn.execute(
        "SELECT id, received_at, source, item_index, code, message, payload FROM rejections"
        " WHERE project_id = %s ORDER BY id DESC LIMIT %s",
        (project_id, limit),
    )
    return cur.fetchall()


def expire(conn: psycopg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` refused calls older than `before` (retention)."""
    cur = conn.execute(
        "DELETE FROM rejections WHERE id IN (SELECT id FROM rejections WHERE received_at < %s"
        " LIMIT %s)",
        (before, limit),
    )
    return cur.rowcount
