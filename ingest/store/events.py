"""The `events` table: every stored call, with its original payload."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from ingest.store._json import jsonb


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
    ' "timestamp", original_timestamp, sent_at, received_at, source, payload'
)


def insert(
    conn: psycopg.Connection, events: Sequence[EventLike], profile_ids: Sequence[int | None]
) -> None:
    """COPY the events in (one round trip for the whole batch)."""
    if not events:
        return
    with conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
        for e, profile_id in zip(events, profile_ids, strict=True):
            copy.write_row(
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
                )
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
