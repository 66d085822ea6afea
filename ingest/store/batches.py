"""The `processed_batches` table: which queued batches are already committed."""

from __future__ import annotations

import psycopg


def claim(conn: psycopg.Connection, task_id: str) -> bool:
    """True the first time; False when this batch was already committed (a redelivery).
    A concurrent second delivery waits on the key until the first commits or rolls back."""
    cur = conn.execute(
        "INSERT INTO processed_batches (task_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
        (task_id,),
    )
    return cur.fetchone() is not None


def expire(conn: psycopg.Connection, older_than_seconds: int, limit: int) -> int:
    cur = conn.execute(
        """
        DELETE FROM processed_batches WHERE task_id IN (
            SELECT task_id FROM processed_batches
            WHERE processed_at < now() - make_interval(secs => %s) LIMIT %s)
        """,
        (older_than_seconds, limit),
    )
    return cur.rowcount
