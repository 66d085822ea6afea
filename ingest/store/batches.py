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


def committed(conn: psycopg.Connection, task_ids: list[str]) -> set[str]:
    """Which of these batches are committed (the recovery sweep asks)."""
    rows = conn.execute(
        "SELECT task_id FROM processed_batches WHERE task_id = ANY(%s)", (task_ids,)
    ).fetchall()
    return {str(r[0]) for r in rows}


def limit_statements(conn: psycopg.Connection, timeout_ms: int) -> None:
    """Every statement of the current transaction is cancelled after `timeout_ms` (a stuck
    lock must not hold a worker forever: the batch or job step is retried instead)."""
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(timeout_ms),))


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
