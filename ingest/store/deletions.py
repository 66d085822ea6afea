"""The `deletions` table, and erasing everything stored of one person.

SQL in one place: a person is the profiles holding the delete call's identifiers, every
profile those were merged into, and every profile merged into any of them (the whole merge
tree: one person, whatever ids they used). Their events, activity (migration 0012),
identities, Engage audience and computed-trait history, account links, merge records and
profiles go, with dead letters and rejections whose payload names the identifiers.
Accounts (companies) stay; deduplication keys stay too (they hold no personal data, and
they keep a sender's retry of an old call from bringing it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True, slots=True)
class Erased:
    profiles: int
    events: int
    identities: int
    dead_letters: int
    rejections: int


ERASE = """
WITH RECURSIVE
up (id, merged_into) AS (
    SELECT id, merged_into FROM profiles
    WHERE project_id = %(project)s AND id = ANY(%(profiles)s::bigint[])
    UNION
    SELECT p.id, p.merged_into FROM profiles p JOIN up ON p.id = up.merged_into
),
person (id) AS (
    SELECT id FROM up
    UNION
    SELECT p.id FROM profiles p JOIN person ON p.merged_into = person.id
),
gone_events AS (
    DELETE FROM events WHERE profile_id IN (SELECT id FROM person) RETURNING 1
),
gone_identities AS (
    DELETE FROM identities WHERE profile_id IN (SELECT id FROM person) RETURNING 1
),
gone_engage AS (
    DELETE FROM engage_computations WHERE profile_id IN (SELECT id FROM person) RETURNING 1
),
gone_links AS (
    DELETE FROM profile_accounts WHERE profile_id IN (SELECT id FROM person) RETURNING 1
),
gone_activity AS (
    DELETE FROM profile_activity WHERE profile_id IN (SELECT id FROM person) RETURNING 1
),
gone_merges AS (
    DELETE FROM profile_merges
    WHERE from_profile IN (SELECT id FROM person) OR into_profile IN (SELECT id FROM person)
    RETURNING 1
),
gone_profiles AS (
    DELETE FROM profiles WHERE id IN (SELECT id FROM person) RETURNING 1
),
gone_letters AS (
    DELETE FROM dead_letters
    WHERE project_id = %(project)s
      AND (payload->>'userId' = ANY(%(user_ids)s::text[])
           OR payload->>'anonymousId' = ANY(%(anonymous_ids)s::text[]))
    RETURNING 1
),
gone_rejections AS (
    -- a rejection keeps the raw text it refused (not always JSON): match the ids as JSON
    -- strings anywhere in it
    DELETE FROM rejections r
    WHERE r.project_id = %(project)s
      AND EXISTS (SELECT 1 FROM unnest(%(quoted)s::text[]) AS q
                  WHERE strpos(r.payload, q) > 0)
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone_profiles), (SELECT count(*) FROM gone_events),
       (SELECT count(*) FROM gone_identities), (SELECT count(*) FROM gone_letters),
       (SELECT count(*) FROM gone_rejections)
"""


def erase(
    conn: psycopg.Connection,
    project_id: int,
    profiles: list[int],
    user_ids: list[str],
    anonymous_ids: list[str],
) -> Erased:
    """Erase the person holding `profiles` (already locked by the caller) and the dead
    letters and rejections naming `user_ids` / `anonymous_ids`."""
    quoted = [orjson.dumps(v).decode() for v in [*user_ids, *anonymous_ids]]
    row = conn.execute(
        ERASE,
        {
            "project": project_id,
            "profiles": profiles,
            "user_ids": user_ids,
            "anonymous_ids": anonymous_ids,
            "quoted": quoted,
        },
    ).fetchone()
    assert row is not None
    return Erased(*(int(n) for n in row))


def record(
    conn: psycopg.Connection,
    project_id: int,
    message_id: str,
    identifiers: list[str],
    received_at: datetime,
    erased: Erased,
) -> None:
    conn.execute(
        """
        INSERT INTO deletions (project_id, message_id, identifiers, received_at, profiles,
                               events, identities, dead_letters, rejections)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            project_id,
            message_id,
            identifiers,
            received_at,
            erased.profiles,
            erased.events,
            erased.identities,
            erased.dead_letters,
            erased.rejections,
        ),
    )


def list_recent(
    conn: psycopg.Connection, project_id: int, limit: int = 100, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The deletions of a project, newest first, keyset-paginated on id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT id, message_id, identifiers, received_at, deleted_at, profiles, events,
                   identities, dead_letters, rejections, lifted_at, lifted_by
            FROM deletions
            WHERE project_id = %(project)s AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"project": project_id, "before": before_id, "limit": limit},
        )
        return cur.fetchall()


# --- suppression: later calls naming a deleted user ------------------------------------------

SUPPRESSING = """
SELECT d.project_id, i.ident, max(d.id)
FROM deletions d CROSS JOIN LATERAL unnest(d.identifiers) AS i (ident)
WHERE d.project_id = ANY(%(projects)s::bigint[])
  AND d.lifted_at IS NULL
  AND d.deleted_at > now() - make_interval(days => %(days)s)
  AND d.identifiers && ARRAY(SELECT json_array_elements_text(%(idents)s::json))
  AND i.ident IN (SELECT json_array_elements_text(%(idents)s::json))
GROUP BY d.project_id, i.ident
"""


def suppressing(
    conn: psycopg.Connection, named: dict[int, set[str]], days: int
) -> dict[tuple[int, str], int]:
    """Which of the `kind:value` identifiers named per project belong to a deletion of the
    last `days` days not lifted: (project, identifier) -> that deletion's id. One query
    for a whole batch; the `&&` overlap finds the deletions through their GIN index
    (migration 0017), so the cost follows the batch's identifiers, not how many
    deletions the project has. The identifiers go as one JSON text: as a list psycopg
    dumps them one by one in Python (~9 ms of worker CPU for a 1,000-call batch's
    ~1,450, for a query that nearly always finds nothing)."""
    if days <= 0 or not named:
        return {}
    idents = sorted({i for found in named.values() for i in found})
    if not idents:
        return {}
    rows = conn.execute(
        SUPPRESSING,
        {"projects": sorted(named), "idents": orjson.dumps(idents).decode(), "days": days},
    ).fetchall()
    return {(int(p), str(i)): int(d) for p, i, d in rows if str(i) in named.get(int(p), ())}


def suppressions(
    conn: psycopg.Connection,
    project_id: int,
    days: int,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """The deletions of a project suppressing calls now (the last `days` days, not
    lifted), newest first, keyset-paginated on id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT id, message_id, identifiers, deleted_at,
                   deleted_at + make_interval(days => %(days)s) AS until
            FROM deletions
            WHERE project_id = %(project)s AND lifted_at IS NULL
              AND deleted_at > now() - make_interval(days => %(days)s)
              AND (%(before)s::bigint IS NULL OR id < %(before)s)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"project": project_id, "days": days, "before": before_id, "limit": limit},
        )
        return cur.fetchall()


def lift(
    conn: psycopg.Connection, project_id: int, deletion_id: int, actor: str
) -> dict[str, Any] | None:
    """Stop a deletion's suppression from now on (its record stays); None when the
    project has no such deletion or it was lifted already."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            UPDATE deletions SET lifted_at = now(), lifted_by = %(actor)s
            WHERE project_id = %(project)s AND id = %(id)s AND lifted_at IS NULL
            RETURNING id, identifiers, deleted_at, lifted_at, lifted_by
            """,
            {"project": project_id, "id": deletion_id, "actor": actor},
        )
        return cur.fetchone()
