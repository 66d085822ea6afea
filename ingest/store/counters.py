"""The `project_counters` table: what the workers finished, per project."""

from __future__ import annotations

from collections import Counter

import psycopg

FIELDS = ("stored", "duplicates", "conflicting_duplicates", "rejected", "dead_lettered")


def add(conn: psycopg.Connection, per_project: dict[int, Counter[str]]) -> None:
    """Move the counters with the rows. Call it last in the batch's transaction: the row
    lock on a project's counters is then held only until the commit."""
    projects = sorted(p for p, c in per_project.items() if any(c[f] for f in FIELDS))
    if not projects:
        return
    conn.execute(
        """
        INSERT INTO project_counters AS pc
            (project_id, stored, duplicates, conflicting_duplicates, rejected, dead_lettered)
        SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                             %s::bigint[], %s::bigint[])
        ON CONFLICT (project_id) DO UPDATE SET
            stored = pc.stored + EXCLUDED.stored,
            duplicates = pc.duplicates + EXCLUDED.duplicates,
            conflicting_duplicates = pc.conflicting_duplicates + EXCLUDED.conflicting_duplicates,
            rejected = pc.rejected + EXCLUDED.rejected,
            dead_lettered = pc.dead_lettered + EXCLUDED.dead_lettered,
            updated_at = now()
        """,
        [projects, *([per_project[p][f] for p in projects] for f in FIELDS)],
    )


def get(conn: psycopg.Connection, project_id: int) -> dict[str, int]:
    row = conn.execute(
        "SELECT stored, duplicates, conflicting_duplicates, rejected, dead_lettered"
        " FROM project_counters WHERE project_id = %s",
        (project_id,),
    ).fetchone()
    return (
        dict(zip(FIELDS, (int(v) for v in row), strict=True)) if row else dict.fromkeys(FIELDS, 0)
    )
