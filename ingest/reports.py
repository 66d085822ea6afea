"""What operators read: stats, profiles and their events. Shared by the admin API and the
CLI, so both answer the same thing. Synchronous SQL: none of this is on the hot path."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import psycopg

from ingest.identifiers import Rules, clean_email, clean_identifier
from ingest.store import accounts, counters, events, identities, profiles
from ingest.store.projects import Project

LOOKUP_KINDS = ("email", "profile_id", "user_id", "anonymous_id")


def received_key(prefix: str) -> str:
    """The Redis hash where the receiver counts calls received, per project id."""
    return prefix + "received"


def stats(conn: psycopg.Connection, project: Project, received: int) -> dict[str, Any]:
    """received = stored + duplicates + rejected + dead_lettered + in_flight.

    `received` is counted by the receiver in Redis as it queues calls; the rest by the
    workers in PostgreSQL in the same transaction as the rows. `in_flight` is what was
    received and not yet finished: queued, or in a worker's hands.
    """
    done = counters.get(conn, project.id)
    finished = done["stored"] + done["duplicates"] + done["rejected"] + done["dead_lettered"]
    return {
        "project": project.name,
        "received": received,
        "stored": done["stored"],
        "duplicates": done["duplicates"],
        "conflicting_duplicates": done["conflicting_duplicates"],
        "rejected": done["rejected"],
        "dead_lettered": done["dead_lettered"],
        "in_flight": received - finished,
    }


class BadLookup(ValueError):
    """A profile lookup without a usable identifier."""


def find_profiles(
    conn: psycopg.Connection, project: Project, kind: str, value: str, rules: Rules
) -> list[dict[str, Any]]:
    """Profiles holding an identifier; an email is normalized as the workers do."""
    if kind not in LOOKUP_KINDS:
        raise BadLookup(f"look up by one of {', '.join(LOOKUP_KINDS)}")
    cleaned = (
        clean_email(value, rules.blocked, rules.strip_plus_tags)
        if kind == "email"
        else clean_identifier(value, rules.blocked)
    )
    if cleaned is None:
        return []
    ids = identities.find_profiles(conn, project.id, kind, cleaned)
    return describe(conn, project, ids)


def describe(conn: psycopg.Connection, project: Project, ids: list[int]) -> list[dict[str, Any]]:
    rows = profiles.get(conn, project.id, ids)
    keys = identities.of_profiles(conn, [r["id"] for r in rows])
    links = accounts.of_profiles(conn, [r["id"] for r in rows])
    out = []
    for row in rows:
        held = keys.get(row["id"], [])
        out.append(
            {
                "id": row["id"],
                "emails": [v for k, v in held if k == "email"],
                "profile_ids": [v for k, v in held if k == "profile_id"],
                "user_ids": [v for k, v in held if k == "user_id"],
                "anonymous_ids": [v for k, v in held if k == "anonymous_id"],
                "traits": row["traits"],
                "accounts": links.get(row["id"], []),
                "event_count": row["event_count"],
                "first_seen": _iso(row["first_seen"]),
                "last_seen": _iso(row["last_seen"]),
            }
        )
    return out


def profile_events(
    conn: psycopg.Connection, project: Project, profile_id: int, limit: int, cursor: str | None
) -> dict[str, Any] | None:
    """A page of a profile's events, newest first; None when there is no such profile."""
    survivor = profiles.resolve_merged(conn, project.id, profile_id)
    if survivor is None:
        return None
    rows = events.of_profile(conn, survivor, limit + 1, _decode_cursor(cursor))
    page = rows[:limit]
    next_cursor = (
        _encode_cursor(page[-1]["timestamp"], page[-1]["id"]) if len(rows) > limit else None
    )
    return {
        "profile_id": survivor,
        "events": [
            {
                "message_id": r["message_id"],
                "type": r["type"],
                "event": r["event"],
                "name": r["name"],
                "properties": r["properties"],
                "timestamp": _iso(r["timestamp"]),
                "received_at": _iso(r["received_at"]),
            }
            for r in page
        ],
        "next": next_cursor,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _encode_cursor(ts: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{row_id}".encode()).decode()


class BadCursor(ValueError):
    """A cursor that this API did not hand out."""


def _decode_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    try:
        ts, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(ts), int(row_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadCursor("invalid cursor") from error
