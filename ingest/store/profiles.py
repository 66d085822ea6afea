"""The `profiles` table: visitors, their traits and counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingest.store._json import rows as json_rows


@dataclass(slots=True)
class ProfileRow:
    id: int
    traits: dict[str, Any]
    trait_times: dict[str, str]
    event_count: int
    first_seen: datetime | None
    last_seen: datetime | None


def allocate_ids(conn: psycopg.Connection, n: int) -> list[int]:
    """Real ids for the profiles a batch creates, in one round trip."""
    if n == 0:
        return []
    cur = conn.execute(
        "SELECT nextval(pg_get_serial_sequence('profiles', 'id')) FROM generate_series(1, %s)",
        (n,),
    )
    return [int(r[0]) for r in cur.fetchall()]


def load(conn: psycopg.Connection, ids: list[int]) -> dict[int, ProfileRow]:
    """The profiles of `ids` (a batch's: ~700 for 1,000 calls), sent as one JSON text: a
    list psycopg dumps as an array in Python, element by element (~2 ms a batch)."""
    if not ids:
        return {}
    cur = conn.execute(
        "SELECT id, traits, trait_timestamps, event_count, first_seen, last_seen"
        " FROM profiles WHERE id IN (SELECT value::bigint FROM json_array_elements_text(%s::json))",
        (json_rows(ids),),
    )
    return {int(r[0]): ProfileRow(int(r[0]), r[1], r[2], int(r[3]), r[4], r[5]) for r in cur}


def upsert(conn: psycopg.Connection, project_id: int, rows: list[ProfileRow]) -> None:
    """Write the final state of every profile a batch created or changed, in one statement."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r.id)
    conn.execute(
        """
        INSERT INTO profiles AS p
            (id, project_id, traits, trait_timestamps, event_count, first_seen, last_seen)
        OVERRIDING SYSTEM VALUE
        SELECT (e->>0)::bigint, %s, (e->1)::jsonb, (e->2)::jsonb, (e->>3)::bigint,
               (e->>4)::timestamptz, (e->>5)::timestamptz
        FROM json_array_elements(%s::json) AS e
        ON CONFLICT (id) DO UPDATE SET
            traits = EXCLUDED.traits,
            trait_timestamps = EXCLUDED.trait_timestamps,
            event_count = EXCLUDED.event_count,
            first_seen = EXCLUDED.first_seen,
            last_seen = EXCLUDED.last_seen,
            updated_at = now()
        """,
        (
            project_id,
            json_rows(
                [
                    [r.id, r.traits, r.trait_times, r.event_count, r.first_seen, r.last_seen]
                    for r in rows
                ]
            ),
        ),
    )


def mark_merged(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """A merged-away profile keeps its row, emptied, pointing at the one it merged into
    (and so do profiles merged into it before: chains stay one step long)."""
    if not pairs:
        return
    params = ([f for f, _ in pairs], [t for _, t in pairs])
    conn.execute(
        """
        UPDATE profiles p SET merged_into = m.into_id, event_count = 0, updated_at = now()
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE p.id = m.from_id
        """,
        params,
    )
    conn.execute(
        """
        UPDATE profiles p SET merged_into = m.into_id
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE p.merged_into = m.from_id
        """,
        params,
    )


def get(conn: psycopg.Connection, project_id: int, ids: list[int]) -> list[dict[str, Any]]:
    """Live profiles (not merged away) for the admin API."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, traits, event_count, first_seen, last_seen FROM profiles"
            " WHERE project_id = %s AND id = ANY(%s) AND merged_into IS NULL ORDER BY id",
            (project_id, ids),
        )
        return cur.fetchall()


def resolve_merged(conn: psycopg.Connection, project_id: int, profile_id: int) -> int | None:
    """A profile id as the admin API sees it: a merged-away id leads to its survivor."""
    row = conn.execute(
        "SELECT coalesce(merged_into, id) FROM profiles WHERE project_id = %s AND id = %s",
        (project_id, profile_id),
    ).fetchone()
    return int(row[0]) if row else None


def absorbed(conn: psycopg.Connection, project_id: int, survivor: int) -> list[int]:
    """Profiles merged into this one (directly or not: chains are kept one step long)."""
    cur = conn.execute(
        "SELECT id FROM profiles WHERE merged_into = %s AND project_id = %s ORDER BY id",
        (survivor, project_id),
    )
    return [int(r[0]) for r in cur.fetchall()]


def add_counts(conn: psycopg.Connection, deltas: dict[int, int]) -> None:
    """Move event counts by relative amounts (reprocessing moves events between profiles;
    a relative update needs no lock on a profile the batch did not load)."""
    deltas = {p: d for p, d in deltas.items() if d}
    if not deltas:
        return
    conn.execute(
        """
        UPDATE profiles p SET event_count = greatest(0, p.event_count + (e->>1)::bigint),
                              updated_at = now()
        FROM json_array_elements(%s::json) AS e
        WHERE p.id = (e->>0)::bigint
        """,
        (json_rows(sorted(deltas.items())),),
    )
