"""The `console_sessions` table: who is signed in to the console (hashes only)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row


def create(
    conn: psycopg.Connection,
    session_hash: bytes,
    token_hash: bytes,
    csrf: str,
    actor: str,
    seconds: int,
) -> None:
    conn.execute(
        "INSERT INTO console_sessions (session_hash, token_hash, csrf, actor, expires_at)"
        " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s))",
        (session_hash, token_hash, csrf, actor, seconds),
    )


def find_live(conn: psycopg.Connection, session_hash: bytes) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, token_hash, csrf, actor FROM console_sessions"
            " WHERE session_hash = %s AND expires_at > now()",
            (session_hash,),
        )
        return cur.fetchone()


def delete(conn: psycopg.Connection, session_hash: bytes) -> None:
    conn.execute("DELETE FROM console_sessions WHERE session_hash = %s", (session_hash,))


def expire(conn: psycopg.Connection) -> int:
    return conn.execute("DELETE FROM console_sessions WHERE expires_at <= now()").rowcount
