"""The `audit_log` table: every operator action that changed something."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb


def record(
    conn: psycopg.Connection,
    actor: str,
    action: str,
    project_id: int | None,
    selection: dict[str, Any],
    count: int | None,
) -> int:
    row = conn.execute(
        "INSERT INTO audit_log (actor, action, project_id, selection, count)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (actor, action, project_id, Jsonb(selection), count),
    ).fetchone()
    assert row is not None
    return int(row[0])


def page(
    conn: psycopg.Connection,
    project_ids: list[int] | None,
    before_id: int | None,
    limit: int,
    action: str | None = None,
    dead_letter: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first, `limit` rows older than `before_id`; only these projects' actions
    when `project_ids` is given (an actor limited to some projects), else all; only the
    dead-letter actions whose selection named this letter's id when `dead_letter` is."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT a.id, a.at, a.actor, a.action, p.name AS project, a.selection, a.count
            FROM audit_log a LEFT JOIN projects p ON p.id = a.project_id
            WHERE (%(before)s::bigint IS NULL OR a.id < %(before)s)
              AND (%(projects)s::bigint[] IS NULL OR a.project_id = ANY(%(projects)s))
              AND (%(action)s::text IS NULL OR a.action = %(action)s)
              AND (%(letter)s::bigint IS NULL OR (a.action LIKE 'dead\\_letters.%%'
                   AND a.selection -> 'ids' @> to_jsonb(%(letter)s::bigint)))
            ORDER BY a.id DESC
            LIMIT %(limit)s
            """,
            {
                "before": before_id,
                "projects": project_ids,
                "action": action,
                "letter": dead_letter,
                "limit": limit,
            },
        )
        return cur.fetchall()
