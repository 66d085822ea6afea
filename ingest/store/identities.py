"""The `identities` table: (project, kind, value) -> profile. One holder per identifier."""

from __future__ import annotations

import psycopg

from ingest.store._json import rows as json_rows

Key = tuple[str, str]  # (kind, value)


def owners(conn: psycopg.Connection, project_id: int, keys: list[Key]) -> dict[Key, int]:
    """Who holds each of `keys`: one primary-key lookup per key, whatever the table holds.

    Written as a LATERAL lookup with `LIMIT 1` (the primary key allows one row anyway) so
    that PostgreSQL cannot flatten it into a join it plans from statistics: as a plain join
    of the JSON rows (which it guesses at 100) it chose, on a young project, a hash join
    reading every identity of the project through the primary key, twice a batch, a cost
    that grew with the project (10-15 us of server CPU a call at 6,000 visitors), and on
    the grown store a nested loop: the one statement of a batch whose plan depended on the
    table's size (`python -m bench`'s grown stage, 2026-11-30). This plan is the nested
    loop on both. At 6,000 visitors the two cost alike (`bench.batch_profile --calls 60000
    --visitors 6000`, alternating: 16.3, 16.6, 15.5 us a call before, 17.6, 20.1, 16.8
    after); the join's cost grew with the project, this one's does not."""
    if not keys:
        return {}
    cur = conn.execute(
        """
        SELECT e->>0, e->>1, i.profile_id
        FROM json_array_elements(%s::json) AS e
        CROSS JOIN LATERAL (
            SELECT profile_id FROM identities
            WHERE project_id = %s AND kind = e->>0 AND value = e->>1
            LIMIT 1
        ) AS i
        """,
        (json_rows(keys), project_id),
    )
    return {(str(k), str(v)): int(p) for k, v, p in cur.fetchall()}


def emails_of(conn: psycopg.Connection, profile_ids: list[int]) -> dict[int, str]:
    if not profile_ids:
        return {}
    cur = conn.execute(
        "SELECT profile_id, value FROM identities WHERE kind = 'email' AND profile_id IN"
        " (SELECT value::bigint FROM json_array_elements_text(%s::json))",
        (json_rows(profile_ids),),  # JSON, not a list: see profiles.load
    )
    return {int(p): str(v) for p, v in cur.fetchall()}


def insert(conn: psycopg.Connection, project_id: int, rows: dict[Key, int]) -> None:
    if not rows:
        return
    items = sorted(rows.items())
    conn.execute(
        """
        INSERT INTO identities (project_id, kind, value, profile_id)
        SELECT %s, e->>0, e->>1, (e->>2)::bigint FROM json_array_elements(%s::json) AS e
        ON CONFLICT (project_id, kind, value) DO NOTHING
        """,
        (project_id, json_rows([[k, v, p] for (k, v), p in items])),
    )


def move(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """Repoint the identities of each merged-away profile to the profile it merged into."""
    if not pairs:
        return
    conn.execute(
        """
        UPDATE identities i SET profile_id = m.into_id
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE i.profile_id = m.from_id
        """,
        ([f for f, _ in pairs], [t for _, t in pairs]),
    )


def of_profiles(conn: psycopg.Connection, profile_ids: list[int]) -> dict[int, list[Key]]:
    out: dict[int, list[Key]] = {}
    if not profile_ids:
        return out
    cur = conn.execute(
        "SELECT profile_id, kind, value FROM identities WHERE profile_id = ANY(%s)"
        " ORDER BY profile_id, kind, created_at, value",
        (profile_ids,),
    )
    for p, k, v in cur.fetchall():
        out.setdefault(int(p), []).append((str(k), str(v)))
    return out


def find_profiles(conn: psycopg.Connection, project_id: int, kind: str, value: str) -> list[int]:
    cur = conn.execute(
        "SELECT profile_id FROM identities WHERE project_id = %s AND kind = %s AND value = %s",
        (project_id, kind, value),
    )
    return [int(r[0]) for r in cur.fetchall()]


def retire(
    conn: psycopg.Connection, project_id: int, keys: list[Key], except_events: list[int]
) -> int:
    """Forget identifiers no stored event derives any more (their events were reprocessed
    under rules that no longer derive them), unless another event of the holder still
    does. `except_events` are the events being rewritten (their old identifiers are going).
    """
    if not keys:
        return 0
    cur = conn.execute(
        """
        DELETE FROM identities i
        USING json_array_elements(%s::json) AS k
        WHERE i.project_id = %s AND i.kind = k->>0 AND i.value = k->>1
          AND NOT EXISTS (
              SELECT 1 FROM events e
              WHERE e.profile_id = i.profile_id
                AND e.identifiers @> ARRAY[i.kind || ':' || i.value]
                AND e.id <> ALL(%s::bigint[]))
        """,
        (json_rows(sorted(set(keys))), project_id, except_events),
    )
    return cur.rowcount
