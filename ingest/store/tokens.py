"""The `api_tokens` table: tokens of the admin API and the console, kept as hashes.

SQL only: what a token may do is decided in `ingest/operations/tokens.py`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

# What a listing shows; the hash never leaves this module.
COLUMNS = """
    t.id, t.name, t.role,
    CASE WHEN t.project_ids IS NULL THEN NULL ELSE
        (SELECT coalesce(array_agg(p.name ORDER BY p.name), '{}')
         FROM projects p WHERE p.id = ANY(t.project_ids))
    END AS projects,
    t.created_at, t.created_by, t.last_used_at, t.revoked_at
"""

# `last_used_at` is written at most this often per token: a busy token would otherwise
# write a row (and its WAL) on every request.
TOUCH_INTERVAL = "1 minute"


class TokenExists(Exception):
    """A live token of that name already exists."""


def create(
    conn: psycopg.Connection,
    name: str,
    role: str,
    project_ids: list[int] | None,
    token_hash: bytes,
    created_by: str,
) -> dict[str, Any]:
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""
                WITH t AS (
                    INSERT INTO api_tokens (name, role, project_ids, token_hash, created_by)
                    VALUES (%s, %s, %s, %s, %s)
                    RETURNING *
                )
                SELECT {COLUMNS} FROM t
                """,
                (name, role, project_ids, token_hash, created_by),
            )
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise TokenExists(name) from None
    assert row is not None
    return row


def find_active(conn: psycopg.Connection, token_hash: bytes) -> dict[str, Any] | None:
    """The live token with this hash: id, name, role, project_ids."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, name, role, project_ids FROM api_tokens"
            " WHERE token_hash = %s AND revoked_at IS NULL",
            (token_hash,),
        )
        return cur.fetchone()


def touch(conn: psycopg.Connection, token_id: int) -> None:
    """Mark the token used now, unless that was already done within TOUCH_INTERVAL."""
    conn.execute(
        "UPDATE api_tokens SET last_used_at = now()"
        " WHERE id = %s AND (last_used_at IS NULL"
        f" OR last_used_at < now() - interval '{TOUCH_INTERVAL}')",
        (token_id,),
    )


def page(
    conn: psycopg.Connection,
    after_id: int | None,
    limit: int,
    include_revoked: bool = False,
) -> list[dict[str, Any]]:
    """Oldest first, `limit` tokens with an id above `after_id`; live ones only unless
    `include_revoked`."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            SELECT {COLUMNS} FROM api_tokens t
            WHERE (%(after)s::bigint IS NULL OR t.id > %(after)s)
              AND (%(revoked)s OR t.revoked_at IS NULL)
            ORDER BY t.id
            LIMIT %(limit)s
            """,
            {"after": after_id, "revoked": include_revoked, "limit": limit},
        )
        return cur.fetchall()


def revoke(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    """Revoke the live token of this name; the token as it was, or None when there is
    none."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            WITH t AS (
                UPDATE api_tokens SET revoked_at = now()
                WHERE name = %s AND revoked_at IS NULL
                RETURNING *
            )
            SELECT {COLUMNS} FROM t
            """,
            (name,),
        )
        return cur.fetchone()
