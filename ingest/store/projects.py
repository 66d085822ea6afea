"""The `projects` table: who may send, by public key.

A project has its current key (`public_key`, the one to give out) and, for a grace period
after a rotation, its previous key (`previous_public_key`, taken until
`previous_key_expires_at`). Every read below shows the previous key only while it is
still valid, so no caller has to compare times to know whether it is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    public_key: str
    webhook_secret: str | None
    # None: calls from any browser origin (ingest/cors.py); else only from these
    allowed_origins: list[str] | None = None
    # Koala's acceptance rule (ingest/acceptance.py): "all" or "identified"
    accept: str = "all"
    # the key before the last rotation, still taken until previous_key_expires_at (both
    # None when there is none, or its grace is over)
    previous_public_key: str | None = None
    previous_key_expires_at: datetime | None = None
    created_at: datetime | None = None
    # companies from work emails (ingest/companies.py): this project's own free-mail
    # domains (no company) and work domains (always a company), besides the deployment's
    company_free_domains: list[str] = field(default_factory=list)
    company_work_domains: list[str] = field(default_factory=list)
    # its own limits (ingest/limits.py); None: the deployment's settings, 0: none
    rate_limit: int | None = None
    queue_limit: int | None = None


COLUMNS = """id, name, public_key, webhook_secret, allowed_origins, accept,
    CASE WHEN previous_key_expires_at > now() THEN previous_public_key END
        AS previous_public_key,
    CASE WHEN previous_key_expires_at > now() THEN previous_key_expires_at END
        AS previous_key_expires_at,
    created_at, company_free_domains, company_work_domains, rate_limit, queue_limit"""
ACTIVE = f"SELECT {COLUMNS} FROM projects WHERE revoked_at IS NULL"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z"  # the table's CHECK (0001_initial)


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
    accept: str = "all",
) -> Project:
    """`allowed_origins` as `ingest.cors.normalize_origins` returns them (None: any);
    `accept`: "all" or "identified" (ingest/acceptance.py)."""
    try:
        with conn.transaction(), conn.cursor(row_factory=class_row(Project)) as cur:
            cur.execute(
                f"""
                INSERT INTO projects
                    (name, public_key, webhook_secret, allowed_origins, accept)
                VALUES (%s, %s, %s, %s, %s)
                RETURNING {COLUMNS}
                """,
                (name, new_public_key(), webhook_secret, allowed_origins, accept),
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


def page(
    conn: psycopg.Connection, after_id: int | None, limit: int, ids: list[int] | None = None
) -> list[Project]:
    """Active projects by id, `limit` of them after `after_id`; only `ids` when given (an
    actor limited to some projects)."""
    with conn.cursor(row_factory=class_row(Project)) as cur:
        cur.execute(
            f"""
            {ACTIVE}
              AND (%(after)s::bigint IS NULL OR id > %(after)s)
              AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
            ORDER BY id
            LIMIT %(limit)s
            """,
            {"after": after_id, "ids": ids, "limit": limit},
        )
        return cur.fetchall()


def rotate_key(conn: psycopg.Connection, name: str, grace_seconds: int) -> Project | None:
    """Give an active project a new key; its current key becomes the previous one, taken
    for `grace_seconds` more (0: not at all). A previous key still in its grace is dropped:
    one rotation is in flight at a time. None when there is no such active project."""
    with conn.transaction(), conn.cursor(row_factory=class_row(Project)) as cur:
        # every right-hand side of an UPDATE reads the row as it was: public_key there is
        # the old key
        cur.execute(
            f"""
            UPDATE projects SET
                public_key = %(new)s,
                previous_public_key = CASE WHEN %(grace)s > 0 THEN public_key END,
                previous_key_expires_at =
                    CASE WHEN %(grace)s > 0 THEN now() + make_interval(secs => %(grace)s) END
            WHERE name = %(name)s AND revoked_at IS NULL
            RETURNING {COLUMNS}
            """,
            {"new": new_public_key(), "grace": grace_seconds, "name": name},
        )
        return cur.fetchone()


def _set(conn: psycopg.Connection, name: str, **columns: Any) -> bool:
    """Set columns of a live project (the setters below); False when there is none."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in columns
    )
    with conn.transaction():
        cur = conn.execute(
            sql.SQL("UPDATE projects SET {} WHERE name = {} AND revoked_at IS NULL").format(
                assignments, sql.Placeholder("name")
            ),
            {**columns, "name": name},
        )
        return cur.rowcount == 1


def set_webhook_secret(conn: psycopg.Connection, name: str, secret: str | None) -> bool:
    """Set (or, None, clear) the secret Segment's webhook signs with (`X-Signature`).
    The receivers apply it within KOALA_KEY_CACHE_SECONDS."""
    return _set(conn, name, webhook_secret=secret)


async def now_async(conn: psycopg.AsyncConnection) -> datetime:
    """PostgreSQL's clock, which the previous keys' expiry times are on."""
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def set_allowed_origins(
    conn: psycopg.Connection, name: str, allowed_origins: list[str] | None
) -> bool:
    """Replace a project's allowed origins (None: any origin). The receivers apply it
    within KOALA_KEY_CACHE_SECONDS (their key cache carries it)."""
    return _set(conn, name, allowed_origins=allowed_origins)


def set_accept(conn: psycopg.Connection, name: str, accept: str) -> bool:
    """Set a project's acceptance rule ("all" or "identified"). The receivers apply it
    within KOALA_KEY_CACHE_SECONDS (their key cache carries it)."""
    return _set(conn, name, accept=accept)


def set_company_domains(
    conn: psycopg.Connection, name: str, free: list[str], work: list[str]
) -> bool:
    """Replace a project's company domain exceptions (ASCII domains, none in both lists).
    The workers apply them within KOALA_KEY_CACHE_SECONDS (workers/project_rules.py)."""
    return _set(conn, name, company_free_domains=free, company_work_domains=work)


def set_limits(
    conn: psycopg.Connection, name: str, rate_limit: int | None, queue_limit: int | None
) -> bool:
    """Set a project's own limits (None: the deployment's settings, 0: none). The
    receivers apply them within KOALA_KEY_CACHE_SECONDS (their key cache carries them)."""
    return _set(conn, name, rate_limit=rate_limit, queue_limit=queue_limit)


def company_domains(
    conn: psycopg.Connection, ids: list[int] | None = None
) -> dict[int, tuple[list[str], list[str]]]:
    """(free, work) company domains of the projects that have any, revoked ones too (their
    queued calls are still stored): one query, for the workers' cache (None: every
    project) and for a reprocessing's recorded rules (one project)."""
    rows = conn.execute(
        """
        SELECT id, company_free_domains, company_work_domains FROM projects
        WHERE (cardinality(company_free_domains) > 0 OR cardinality(company_work_domains) > 0)
          AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
        """,
        {"ids": ids},
    ).fetchall()
    return {int(r[0]): (list(r[1]), list(r[2])) for r in rows}


def revoke(conn: psycopg.Connection, name: str) -> datetime | None:
    """Refuse every key of the project (its previous one too) from now on; answer when
    (None: no such active project)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE projects SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL"
            " RETURNING revoked_at",
            (name,),
        ).fetchone()
        return row[0] if row else None


def all_ids(conn: psycopg.Connection) -> list[int]:
    """Every project, revoked ones too (their stored data still ages)."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM projects ORDER BY id").fetchall()]


def name_of(conn: psycopg.Connection, project_id: int) -> str:
    row = conn.execute("SELECT name FROM projects WHERE id = %s", (project_id,)).fetchone()
    return str(row[0]) if row else str(project_id)
