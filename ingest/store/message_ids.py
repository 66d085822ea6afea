"""The `message_ids` table: deduplication keys, the authority on "seen this messageId"."""

from __future__ import annotations

import psycopg

from ingest.store._json import rows

Key = tuple[int, str]  # (project_id, message_id)


def claim(conn: psycopg.Connection, hashes: dict[Key, bytes]) -> set[Key]:
    """Insert the keys; return those this transaction inserted (the others were seen).

    Rows go in sorted, so two transactions claiming overlapping keys wait on each other in
    the same order and cannot deadlock; the second one sees the first's keys as taken.
    """
    if not hashes:
        return set()
    cur = conn.execute(
        """
        INSERT INTO message_ids (project_id, message_id, content_hash)
        SELECT (e->>0)::bigint, e->>1, decode(e->>2, 'hex')
        FROM json_array_elements(%s::json) AS e
        ORDER BY 1, 2
        ON CONFLICT (project_id, message_id) DO NOTHING
        RETURNING project_id, message_id
        """,
        (rows([[p, m, h.hex()] for (p, m), h in sorted(hashes.items())]),),
    )
    return {(int(p), str(m)) for p, m in cur.fetchall()}


def content_hashes(conn: psycopg.Connection, keys: list[Key]) -> dict[Key, bytes]:
    """The content hash stored with each key (to tell conflicting duplicates apart)."""
    if not keys:
        return {}
    cur = conn.execute(
        """
        SELECT k.project_id, k.message_id, k.content_hash
        FROM message_ids k
        JOIN json_array_elements(%s::json) AS e
          ON k.project_id = (e->>0)::bigint AND k.message_id = e->>1
        """,
        (rows(keys),),
    )
    return {(int(p), str(m)): bytes(h) for p, m, h in cur.fetchall()}


def expire(conn: psycopg.Connection, days: int, limit: int) -> int:
    """Forget up to `limit` keys older than the window (a messageId seen again after that
    is new); in chunks, so expiry never holds a long lock beside live batches."""
    cur = conn.execute(
        """
        DELETE FROM message_ids k USING (
            SELECT project_id, message_id FROM message_ids
            WHERE first_seen < now() - make_interval(days => %s) LIMIT %s) AS old
        WHERE k.project_id = old.project_id AND k.message_id = old.message_id
        """,
        (days, limit),
    )
    return cur.rowcount
