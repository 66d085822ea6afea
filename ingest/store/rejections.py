"""The `rejections` table: calls the receiver refused for their content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


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


def recent(
    conn: psycopg.Connection,
    project_id: int,
    limit: int,
    before_id: int | None = None,
    code: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated on id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT id, received_at, source, item_index AS index, code, message, payload
            FROM rejections
            WHERE project_id = %(project)s
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
              AND (%(code)s::text IS NULL OR code = %(code)s)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"project": project_id, "before": before_id, "code": code, "limit": limit},
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
