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


ACTIVE = "SELECT id, name, public_key, webhook_secret FROM projects WHERE revoked_at IS NULL"


class ProjectExists(Exception):
    """A project of that name already exists."""


def new_public_key() -> str:
    """Koala-style public key: not a secret (it ships in browsers), but unguessable."""
    return "pk_" + secrets.token_hex(16)


def create(conn: psycopg.Connection, name: str, webhook_secret: str | None = None) -> Project:
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Project)) as cur:
            cur.execute(
                """
                INSERT INTO projects (name, public_key, webhook_secret)
                VALUES (%s, %s, %s)
                RETURNING id, name, public_key, webhook_secret
                """,
                (name, new_public_key(), webhook_secret),
            )
            row = cur.fetchone()
    except psycopg.errors.UniqueViolation:
        raise ProjectExists(name) from None
    assert row is not None
    return row


def get_by_name(conn: psycopg.Connection, name: str) -> Project | None:
    with conn.cursor(row_factory=class_row(Project)) as cur:
        cur.execute(
            "SELECT id, name, public_key, webhook_secret FROM projects"
            " WHERE name = %s AND revoked_at IS NULL",
            (name,),
        )
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
