"""Migrations: applied by `koala-ingest migrate`, idempotent and safe to run concurrently."""

from __future__ import annotations

import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor

import psycopg
from conftest import Servers, koala

from ingest.embedded import drop_database, ensure_database
from ingest.migrate import pending

TABLES = {
    "projects",
    "profiles",
    "identities",
    "events",
    "accounts",
    "dead_letters",
    "message_ids",
    "rejections",
    "profile_merges",
    "project_counters",
}


def test_migrate_twice_and_concurrently_on_a_new_database(servers: Servers) -> None:
    name = f"koala_mig_{secrets.token_hex(4)}"
    url = ensure_database(servers.server_url, name)
    try:
        env = servers.env(DATABASE_URL=url)

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                koala("migrate"), env=env, capture_output=True, text=True, timeout=120
            )

        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: run(), range(3)))
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        assert sum("0001_initial" in r.stdout for r in results) == 1
        again = run()
        assert again.returncode == 0 and "up to date" in again.stdout
        assert pending(url) == []
        with psycopg.connect(url) as conn:
            found = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
                )
            }
        assert found >= TABLES
    finally:
        drop_database(servers.server_url, name)


def test_migrate_uses_its_own_url_when_one_is_set(servers: Servers) -> None:
    """Behind a transaction-pooling PgBouncer, DATABASE_URL cannot hold migrate's session
    lock: KOALA_MIGRATE_DATABASE_URL takes it past the pool."""
    done = subprocess.run(
        koala("migrate"),
        env=servers.env(
            DATABASE_URL="postgresql://nobody@127.0.0.1:1/nowhere",
            KOALA_MIGRATE_DATABASE_URL=servers.database_url,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
