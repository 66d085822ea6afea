"""Rows that name a profile or project that is not there: what the hot tables' foreign
keys refused, before migration 0018 dropped them for their per-row cost.

The migration's statement triggers keep the two ways such a row could appear through
a deletion (a project deleted, an erasure that left rows behind); this count is the
check of the third, a writer naming an id it never inserted. It reads whole tables, so it
is for tests and operators' checks, never a hot path.
"""

from __future__ import annotations

import psycopg

# (table, column, parent): every reference the dropped foreign keys made
REFERENCES = (
    ("events", "profile_id", "profiles"),
    ("identities", "profile_id", "profiles"),
    ("engage_computations", "profile_id", "profiles"),
    ("profile_accounts", "profile_id", "profiles"),
    ("profile_activity", "profile_id", "profiles"),
    ("events", "project_id", "projects"),
    ("identities", "project_id", "projects"),
    ("engage_computations", "project_id", "projects"),
    ("profile_accounts", "project_id", "projects"),
    ("message_ids", "project_id", "projects"),
    ("profiles", "project_id", "projects"),
    ("profile_activity", "project_id", "projects"),
    ("accounts", "project_id", "projects"),
    ("account_domains", "project_id", "projects"),
    ("account_merges", "project_id", "projects"),
    ("profile_merges", "project_id", "projects"),
)


def orphans(conn: psycopg.Connection) -> dict[str, int]:
    """`table.column` -> rows naming a missing parent, for every reference with any."""
    parts = [
        f"SELECT '{t}.{c}', count(*) FROM {t} x"
        f" WHERE x.{c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {p} WHERE id = x.{c})"
        for t, c, p in REFERENCES
    ]
    rows = conn.execute(" UNION ALL ".join(parts)).fetchall()
    return {str(name): int(n) for name, n in rows if n}
