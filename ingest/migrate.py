"""Apply the versioned SQL migrations in `ingest/migrations/` (yoyo-migrations).

Safe to run twice or from several processes at once: the whole run holds a PostgreSQL
advisory lock, so a second `migrate` waits for the first and then finds nothing to do.
It waits by trying again every half second, never inside a blocked statement: a
migration building an index CONCURRENTLY (0004) waits for every open transaction of the
database, a waiter blocked in `pg_advisory_lock` is one, and it waits in turn for the
migrator's lock, held on another connection: a deadlock PostgreSQL cannot see.
Holding that lock also makes it safe to clear yoyo's own lock row, which a `migrate`
killed mid-run would otherwise leave behind.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

# yoyo logs every step of every migration at INFO (a screenful before `up`'s welcome);
# `koala-ingest migrate` and `up` say what was applied in one line
logging.getLogger("yoyo").setLevel(logging.WARNING)

# An arbitrary constant: the advisory lock key all koala-ingest migrators agree on.
ADVISORY_LOCK_KEY = 0x6B6F616C61  # "koala"
LOCK_POLL_SECONDS = 0.5


def _yoyo_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def migrations_dir() -> str:
    return str(resources.files("ingest") / "migrations")


def migrate(database_url: str) -> list[str]:
    """Apply every pending migration; return the ids of those applied by this call."""
    migrations = read_migrations(migrations_dir())
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        while not _try_lock(lock_conn):
            time.sleep(LOCK_POLL_SECONDS)
        try:
            backend = get_backend(_yoyo_url(database_url))
            try:
                backend.break_lock()
            except backend.DatabaseError:
                backend.rollback()  # the lock table does not exist yet on a new database
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
            applied = [m.id for m in pending]
            backend.connection.close()
            return applied
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _try_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    return bool(row and row[0])


def pending(database_url: str) -> list[str]:
    """Ids of migrations not yet applied (for readiness checks and `migrate --check`)."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        return [m.id for m in backend.to_apply(read_migrations(migrations_dir()))]
    finally:
        backend.connection.close()
