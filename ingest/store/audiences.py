"""The `engage_computations` table (migration 0013): every Engage audience membership and
computed trait call stored, on the profile it was about; and the reads over it.

Transitions are derived when read, not stored: the rows of one profile and audience in
event-time order (`at`; at one instant an entering before an exit, then by messageId),
keeping each row whose `entered` differs from the row before it. So the history stays
right whatever order the calls arrive in (a late call slots in by its timestamp), a
re-sync repeating a state adds nothing, and a merge that brings two profiles' rows
together needs no rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingest.audiences import Computation
from ingest.store._json import jsonb


@dataclass(frozen=True, slots=True)
class Row:
    message_id: str
    profile_id: int
    at: datetime
    computation: Computation


def record(conn: psycopg.Connection, project_id: int, rows: Sequence[Row]) -> None:
    """Write a batch's Engage calls: one statement. A row already there (reprocessing the
    call again) is rewritten in place, so nothing is ever doubled."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r.message_id)  # one lock order for every writer
    c = [r.computation for r in rows]
    conn.execute(
        """
        INSERT INTO engage_computations AS e (project_id, message_id, profile_id, kind, key,
            entered, value, computation_id, space_id, namespace, at)
        SELECT %s, m, p, k, y, n, v, ci, si, ns, t
        FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::boolean[],
                    %s::jsonb[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])
            AS x(m, p, k, y, n, v, ci, si, ns, t)
        ON CONFLICT (project_id, message_id) DO UPDATE SET
            profile_id = EXCLUDED.profile_id, kind = EXCLUDED.kind, key = EXCLUDED.key,
            entered = EXCLUDED.entered, value = EXCLUDED.value,
            computation_id = EXCLUDED.computation_id, space_id = EXCLUDED.space_id,
            namespace = EXCLUDED.namespace, at = EXCLUDED.at
        """,
        (
            project_id,
            [r.message_id for r in rows],
            [r.profile_id for r in rows],
            [x.kind for x in c],
            [x.key for x in c],
            [x.entered for x in c],
            [jsonb(x.value) for x in c],
            [x.computation_id for x in c],
            [x.space_id for x in c],
            [x.namespace for x in c],
            [r.at for r in rows],
        ),
    )


def forget(conn: psycopg.Connection, project_id: int, message_ids: list[str]) -> None:
    """Reprocessing: calls today's rules no longer read as Engage calls lose their row."""
    if message_ids:
        conn.execute(
            "DELETE FROM engage_computations WHERE project_id = %s AND message_id = ANY(%s)",
            (project_id, sorted(message_ids)),
        )


def move(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """A merged-away profile's Engage history goes to the profile it merged into."""
    if not pairs:
        return
    conn.execute(
        """
        UPDATE engage_computations e SET profile_id = m.into_id
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE e.profile_id = m.from_id
        """,
        ([f for f, _ in pairs], [t for _, t in pairs]),
    )


TRANSITIONS = """
SELECT key, entered, at, message_id, computation_id, space_id, namespace
FROM (
    SELECT key, entered, at, message_id, computation_id, space_id, namespace,
           lag(entered) OVER (PARTITION BY key ORDER BY at, NOT entered, message_id) AS before
    FROM engage_computations
    WHERE profile_id = %(profile)s AND kind = 'audience'
) r
WHERE before IS DISTINCT FROM entered
ORDER BY key, at, NOT entered, message_id
"""


def transitions(conn: psycopg.Connection, profile_id: int) -> list[dict[str, Any]]:
    """A profile's audience transitions (entered, exited, ...), per audience, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(TRANSITIONS, {"profile": profile_id})
        return cur.fetchall()


def trait_sources(conn: psycopg.Connection, profile_id: int) -> list[dict[str, Any]]:
    """Per computed trait of a profile, the latest Engage call that set it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT DISTINCT ON (key) key, value, at, message_id, computation_id, space_id,
                   namespace
            FROM engage_computations
            WHERE profile_id = %s AND kind = 'trait'
            ORDER BY key, at DESC, message_id DESC
            """,
            (profile_id,),
        )
        return cur.fetchall()


# A profile is in an audience when its latest entering is later than its latest exit (at
# one instant, the exit wins: TRANSITIONS orders them so too). Plain max() aggregates in
# one ordered pass over the key's index: no per-profile sort.
MEMBER = (
    "coalesce(max(at) FILTER (WHERE entered)"
    " > coalesce(max(at) FILTER (WHERE NOT entered), '-infinity'), false)"
)

SUMMARY = f"""
WITH latest AS (
    SELECT key, profile_id, {MEMBER} AS entered, max(at) AS at,
           max(computation_id) AS computation_id, max(space_id) AS space_id
    FROM engage_computations
    WHERE project_id = %(project)s AND kind = 'audience'
      AND (%(after)s::text IS NULL OR key > %(after)s)
    GROUP BY key, profile_id
)
SELECT key, count(*) FILTER (WHERE entered) AS members, count(*) AS profiles,
       max(at) AS last_change, max(computation_id) AS computation_id,
       max(space_id) AS space_id
FROM latest GROUP BY key ORDER BY key LIMIT %(limit)s
"""


def summaries(
    conn: psycopg.Connection, project_id: int, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """A project's audiences, by key: members now, profiles ever in it, the latest call."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SUMMARY, {"project": project_id, "after": after, "limit": limit})
        return cur.fetchall()


MEMBERS = f"""
WITH per AS (
    -- by profile id along the key's index, so a page stops after `limit` profiles
    SELECT profile_id, {MEMBER} AS member, max(at) AS changed_at,
           max(at) FILTER (WHERE NOT entered) AS last_exit
    FROM engage_computations
    WHERE project_id = %(project)s AND kind = 'audience' AND key = %(key)s
      AND (%(after)s::bigint IS NULL OR profile_id > %(after)s)
    GROUP BY profile_id
    HAVING %(state)s = 'all' OR {MEMBER} = (%(state)s = 'entered')
    ORDER BY profile_id
    LIMIT %(limit)s
)
SELECT per.profile_id, per.member, per.changed_at,
       -- the start of the current stay: the first entering after the last exit
       CASE WHEN per.member THEN
           (SELECT min(e.at) FROM engage_computations e
            WHERE e.project_id = %(project)s AND e.kind = 'audience' AND e.key = %(key)s
              AND e.profile_id = per.profile_id AND e.entered
              AND e.at > coalesce(per.last_exit, '-infinity'))
       END AS since
FROM per
ORDER BY per.profile_id
"""


def members(
    conn: psycopg.Connection,
    project_id: int,
    key: str,
    state: str,
    after: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Profiles by their latest call for audience `key`: in it now (`entered`), out of it
    (`exited`) or both (`all`); keyset-paginated on profile id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            MEMBERS,
            {"project": project_id, "key": key, "state": state, "after": after, "limit": limit},
        )
        return cur.fetchall()


def expire(conn: psycopg.Connection, project_id: int, before: datetime, limit: int) -> int:
    """Retention: delete up to `limit` Engage calls of a project older than `before`, but
    never a profile's latest call of an audience or computed trait (in the order the reads
    use): the history past retention goes, the state it left stays (a member who entered
    two years ago is still a member)."""
    cur = conn.execute(
        """
        DELETE FROM engage_computations WHERE (project_id, message_id) IN (
            SELECT e.project_id, e.message_id FROM engage_computations e
            WHERE e.project_id = %(project)s AND e.at < %(before)s
              AND EXISTS (
                SELECT 1 FROM engage_computations n
                WHERE n.profile_id = e.profile_id AND n.kind = e.kind AND n.key = e.key
                  AND (n.at, NOT coalesce(n.entered, false), n.message_id)
                      > (e.at, NOT coalesce(e.entered, false), e.message_id))
            LIMIT %(limit)s)
        """,
        {"project": project_id, "before": before, "limit": limit},
    )
    return cur.rowcount
