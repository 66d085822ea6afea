"""The `projects` table: who may send, by public key."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    public_key: str
    webhook_secret: str | None
    # None: calls from any browser origin (ingest/cors.py); else only from these
    allowed_origins: list[str] | None = None


COLUMNS = "id, name, public_key, webhook_secret, allowed_origins"
ACTIVE = f"SELECT {COLUMNS} FROM projects WHERE revoked_at IS NULL"


class ProjectExists(Exception):
    """A project of that name already exists."""


def new_public_key() -> str:
    """Koala-style public key: not a secret (it ships in browsers), but unguessable."""
    return "pk_" + secrets.token_hex(16)


def create(
    conn: psycopg.Connection,
    name: str,
    webhook_secret: str | None = None,
    allowed_origins: list[str] | None = None,
) -> Project:
    """`allowed_origins` as `ingest.cors.normalize_origins` returns them (None: any)."""
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Project)) as cur:
            cur.execute(
                f"""
                INSERT INTO projects (name, public_key, webhook_secret, allowed_origins)
                VALUES (%s, %s, %s, %s)
                RETURNING {COLUMNS}
                """,
                (name, new_public_key(), webhook_secret, allowed_origins),
            )
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise ProjectExists(name) from None
    assert row is not None
    return row


def get_by_name(conn: psycopg.Connection, name: str) -> Project | None:
    with conn.cursor(row_factory=class_row(Project)) as cur:
        cur.execute(f"{ACTIVE} AND name = %s", (name,))
        return cur.fetchone()


def list_active(conn: psycopg.Connection) -> list[Project]:
    with conn.cursor(row_factory=class_row(Project)) as cur:
        cur.execute(ACTIVE)
        return cur.fetchall()


async def list_active_async(conn: psycopg.AsyncConnection) -> list[Project]:
    """Same as list_active, for the receiver's key cache."""
    async with conn.cursor(row_factory=class_row(Project)) as cur:
        await cur.execute(ACTIVE)
        return await cur.fetchall()


def set_allowed_origins(
    conn: psycopg.Connection, name: str, allowed_origins: list[str] | None
) -> bool:
    """Replace a project's allowed origins (None: any origin). The receivers apply it
    within KOALA_KEY_CACHE_SECONDS (their key cache carries it)."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE projects SET allowed_origins = %s WHERE name = %s AND revoked_at IS NULL",
            (allowed_origins, name),
        )
        return cur.rowcount == 1


def revoke(conn: psycopg.Connection, name: str) -> bool:
    with conn.transaction():
        cur = conn.execute(
            "UPDATE projects SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
            (name,),
        )
        return cur.rowcount == 1


def all_ids(conn: psycopg.Connection) -> list[int]:
    """Every project, revoked ones too (their stored data still ages)."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM projects ORDER BY id").fetchall()]


def name_of(conn: psycopg.Connection, project_id: int) -> str:
    row = conn.execute("SELECT name FROM projects WHERE id = %s", (project_id,)).fetchone()
    return str(row[0]) if row else str(project_id)
