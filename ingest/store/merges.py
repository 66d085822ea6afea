"""The `profile_merges` table: every merge, and every merge the guard refused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from ingest.store._json import rows as json_rows


class MergeLike(Protocol):
    @property
    def from_profile(self) -> int: ...
    @property
    def into_profile(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def refused(self) -> bool: ...


def log(conn: psycopg.Connection, project_id: int, merges: Sequence[MergeLike]) -> None:
    """Record merges and refused merges; a refusal already on record (the same two
    profiles kept apart before: a reprocessing pass, the identity check) is not repeated."""
    refused = [(m.from_profile, m.into_profile) for m in merges if m.refused]
    if refused:
        cur = conn.execute(
            """
            SELECT m.from_profile, m.into_profile FROM profile_merges m
            JOIN json_array_elements(%s::json) AS p
              ON m.from_profile = (p->>0)::bigint AND m.into_profile = (p->>1)::bigint
            WHERE m.refused
            """,
            (json_rows(refused),),
        )
        known = {(int(a), int(b)) for a, b in cur.fetchall()}
        merges = [
            m for m in merges if not (m.refused and (m.from_profile, m.into_profile) in known)
        ]
    if not merges:
        return
    with conn.cursor().copy(
        "COPY profile_merges (project_id, from_profile, into_profile, reason, message_id, refused)"
        " FROM STDIN"
    ) as copy:
        for m in merges:
            copy.write_row(
                (project_id, m.from_profile, m.into_profile, m.reason, m.message_id, m.refused)
            )


def expire(conn: psycopg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` merge records older than `before` (retention)."""
    cur = conn.execute(
        "DELETE FROM profile_merges WHERE id IN (SELECT id FROM profile_merges"
        " WHERE created_at < %s LIMIT %s)",
        (before, limit),
    )
    return cur.rowcount


def of_profiles(
    conn: psycopg.Connection, project_id: int, ids: list[int], limit: int
) -> list[dict[str, Any]]:
    """Merge records (refused ones too) naming any of these profiles, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT from_profile, into_profile, reason, message_id, refused, created_at
            FROM profile_merges
            WHERE project_id = %(project)s
              AND (from_profile = ANY(%(ids)s) OR into_profile = ANY(%(ids)s))
            ORDER BY created_at DESC, id DESC
            LIMIT %(limit)s
            """,
            {"project": project_id, "ids": ids, "limit": limit},
        )
        return cur.fetchall()
