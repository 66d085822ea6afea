"""The `events` table: every stored call, with its original payload."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from ingest.store._json import jsonb
from ingest.store._json import rows as json_rows


class EventLike(Protocol):
    project_id: int
    message_id: str
    type: str
    event: str | None
    name: str | None
    properties: dict[str, Any]
    context: dict[str, Any]
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    received_at: datetime
    source: str
    payload: dict[str, Any]


COLUMNS = (
    "project_id, message_id, profile_id, type, event, name, properties, context,"
    ' "timestamp", original_timestamp, sent_at, received_at, source, payload, identifiers'
)


# COPY in PostgreSQL's binary format: no text escaping of the JSON on our side, no parsing
# of numbers and timestamps on the server's (bench/README.md: what it bought).
COPY_TYPES = [
    "int8", "text", "int8", "text", "text", "text", "jsonb", "jsonb",
    "timestamptz", "timestamptz", "timestamptz", "timestamptz", "text", "jsonb", "text[]",
]  # fmt: skip


def copy_rows(conn: psycopg.Connection, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY rows of the events columns into `table` (events, or the benchmark's copy)."""
    with conn.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)


def insert(
    conn: psycopg.Connection,
    events: Sequence[EventLike],
    profile_ids: Sequence[int | None],
    identifiers: Sequence[list[str]],
) -> None:
    """COPY the events in (one round trip for the whole batch)."""
    if not events:
        return
    copy_rows(
        conn,
        "events",
        (
            (
                e.project_id,
                e.message_id,
                profile_id,
                e.type,
                e.event,
                e.name,
                jsonb(e.properties),
                jsonb(e.context),
                e.timestamp,
                e.original_timestamp,
                e.sent_at,
                e.received_at,
                e.source,
                jsonb(e.payload),
                ids,
            )
            for e, profile_id, ids in zip(events, profile_ids, identifiers, strict=True)
        ),
    )


def move(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """A merged-away profile's events now belong to the profile it merged into."""
    if not pairs:
        return
    conn.execute(
        """
        UPDATE events e SET profile_id = m.into_id
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE e.profile_id = m.from_id
        """,
        ([f for f, _ in pairs], [t for _, t in pairs]),
    )


def of_profile(
    conn: psycopg.Connection,
    profile_id: int,
    limit: int,
    before: tuple[datetime, int] | None,
) -> list[dict[str, Any]]:
    """Newest first, keyset-paginated on ("timestamp", id)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT id, message_id, type, event, name, properties, "timestamp", received_at
            FROM events
            WHERE profile_id = %(profile)s
              AND (%(ts)s::timestamptz IS NULL OR ("timestamp", id) < (%(ts)s, %(id)s))
            ORDER BY "timestamp" DESC, id DESC
            LIMIT %(limit)s
            """,
            {
                "profile": profile_id,
                "ts": before[0] if before else None,
                "id": before[1] if before else None,
                "limit": limit,
            },
        )
        return cur.fetchall()


# What reprocessing reads of a stored event: its payload and what was derived from it.
REPROCESS_COLUMNS = 'id, "timestamp", source, payload, profile_id, identifiers'


def in_range(
    conn: psycopg.Connection,
    project_id: int,
    since: datetime,
    until: datetime,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The next stored events of a project's time range, in (timestamp, id) order after
    the cursor `after`: what reprocessing reads, a bounded batch at a time."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            SELECT {REPROCESS_COLUMNS}
            FROM events
            WHERE project_id = %(project)s
              AND "timestamp" >= %(since)s AND "timestamp" < %(until)s
              AND (%(ts)s::timestamptz IS NULL OR ("timestamp", id) > (%(ts)s, %(id)s))
            ORDER BY "timestamp", id
            LIMIT %(limit)s
            """,
            {
                "project": project_id,
                "since": since,
                "until": until,
                "ts": after[0] if after else None,
                "id": after[1] if after else None,
                "limit": limit,
            },
        )
        return cur.fetchall()


def count_in_range(
    conn: psycopg.Connection, project_id: int, since: datetime, until: datetime
) -> int:
    row = conn.execute(
        'SELECT count(*) FROM events WHERE project_id = %s AND "timestamp" >= %s'
        ' AND "timestamp" < %s',
        (project_id, since, until),
    ).fetchone()
    return int(row[0]) if row else 0


def by_ids(conn: psycopg.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """Events by id, in id order (the identity check re-resolves the ones it found)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {REPROCESS_COLUMNS} FROM events WHERE id = ANY(%s) ORDER BY id",
            (ids,),
        )
        return cur.fetchall()


def profiles_of(conn: psycopg.Connection, ids: list[int]) -> dict[int, int | None]:
    """Each event's profile now (read again once the profiles are locked)."""
    if not ids:
        return {}
    cur = conn.execute("SELECT id, profile_id FROM events WHERE id = ANY(%s)", (ids,))
    return {int(i): (int(p) if p is not None else None) for i, p in cur.fetchall()}


def rewrite(
    conn: psycopg.Connection,
    rows: Sequence[tuple[int, EventLike, int, list[str]]],
) -> None:
    """Overwrite what normalization and resolution derived for stored events, in place:
    (event id, the event as normalized now, its profile, its identifiers). The payload,
    messageId and receipt time stay as received."""
    if not rows:
        return
    conn.execute(
        """
        UPDATE events e SET
            profile_id = (x->>1)::bigint, type = x->>2, event = x->>3, name = x->>4,
            properties = (x->5)::jsonb, context = (x->6)::jsonb,
            "timestamp" = (x->>7)::timestamptz, original_timestamp = (x->>8)::timestamptz,
            sent_at = (x->>9)::timestamptz,
            identifiers = ARRAY(SELECT json_array_elements_text(x->10))
        FROM json_array_elements(%s::json) AS x
        WHERE e.id = (x->>0)::bigint
        """,
        (
            json_rows(
                [
                    [
                        event_id,
                        profile_id,
                        e.type,
                        e.event,
                        e.name,
                        e.properties,
                        e.context,
                        e.timestamp,
                        e.original_timestamp,
                        e.sent_at,
                        ids,
                    ]
                    for event_id, e, profile_id, ids in sorted(rows, key=lambda r: r[0])
                ]
            ),
        ),
    )


def split_identities(
    conn: psycopg.Connection, after_id: int, up_to_id: int, limit: int
) -> list[dict[str, Any]]:
    """Events in (after_id, up_to_id] carrying an identifier held by another profile of
    their project: two profiles that share an identifier (a race, or a rule since
    changed) and were not kept apart on purpose (a merge the email guard refused). One
    event per pair of profiles is enough to merge them again."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT DISTINCT ON (e.profile_id, i.profile_id)
                   e.id, e.project_id, e.profile_id, i.profile_id AS holder
            FROM events e
            CROSS JOIN LATERAL unnest(e.identifiers) AS x(key)
            JOIN identities i
              ON i.project_id = e.project_id
             AND i.kind = split_part(x.key, ':', 1)
             AND i.value = substr(x.key, strpos(x.key, ':') + 1)
            WHERE e.id > %(after)s AND e.id <= %(upto)s
              AND e.profile_id <> i.profile_id
              AND NOT EXISTS (
                  SELECT 1 FROM profile_merges m
                  WHERE m.refused AND m.project_id = e.project_id
                    AND ((m.from_profile = e.profile_id AND m.into_profile = i.profile_id)
                      OR (m.from_profile = i.profile_id AND m.into_profile = e.profile_id)))
            ORDER BY e.profile_id, i.profile_id, e.id
            LIMIT %(limit)s
            """,
            {"after": after_id, "upto": up_to_id, "limit": limit},
        )
        return cur.fetchall()


def max_id(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def expire(conn: psycopg.Connection, project_id: int, before: datetime, limit: int) -> int:
    """Delete up to `limit` events of a project older than `before` (retention)."""
    cur = conn.execute(
        """
        DELETE FROM events WHERE id IN (
            SELECT id FROM events WHERE project_id = %s AND "timestamp" < %s LIMIT %s)
        """,
        (project_id, before, limit),
    )
    return cur.rowcount
