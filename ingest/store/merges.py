"""The `profile_merges` table: every merge, and every merge the guard refused."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import psycopg


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
