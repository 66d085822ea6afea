"""Store: one transaction per batch, set-based SQL, idempotent under redelivery.

Dedupe happens here because PostgreSQL is its authority: `message_ids` has a primary key
on (project, messageId), rows go in sorted (so two workers lock keys in the same order
and cannot deadlock), and only the ids this transaction inserted become events. A batch
redelivered after a crash finds all its keys taken and writes nothing twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from workers.normalize import Event


@dataclass(slots=True)
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    conflicting: int = 0
    rejected: int = 0
    per_project: dict[int, Counter[str]] = field(default_factory=dict)

    def count(self, project_id: int, what: str, n: int = 1) -> None:
        self.per_project.setdefault(project_id, Counter())[what] += n


@dataclass(slots=True)
class RejectionRow:
    project_id: int
    received_at: str
    source: str
    index: int | None
    code: str
    message: str
    payload: str


def insert_rejections(conn: psycopg.Connection, rows: list[RejectionRow]) -> None:
    if not rows:
        return
    with conn.cursor().copy(
        "COPY rejections (project_id, received_at, source, item_index, code, message, payload)"
        " FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row(
                (r.project_id, r.received_at, r.source, r.index, r.code, r.message, r.payload)
            )


def claim_message_ids(conn: psycopg.Connection, events: list[Event]) -> set[tuple[int, str]]:
    """Insert the dedup keys; return the (project, messageId) pairs this batch now owns."""
    if not events:
        return set()
    rows = sorted({(e.project_id, e.message_id): e.content_hash for e in events}.items())
    cur = conn.execute(
        """
        INSERT INTO message_ids (project_id, message_id, content_hash)
        SELECT p, m, h FROM unnest(%s::bigint[], %s::text[], %s::bytea[]) AS t(p, m, h)
        ORDER BY p, m
        ON CONFLICT (project_id, message_id) DO NOTHING
        RETURNING project_id, message_id
        """,
        (
            [p for (p, _), _ in rows],
            [m for (_, m), _ in rows],
            [h for _, h in rows],
        ),
    )
    return {(int(p), str(m)) for p, m in cur.fetchall()}


def known_hashes(
    conn: psycopg.Connection, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], bytes]:
    """Content hashes already stored for these keys (to flag conflicting duplicates)."""
    if not keys:
        return {}
    cur = conn.execute(
        """
        SELECT k.project_id, k.message_id, k.content_hash
        FROM message_ids k
        JOIN unnest(%s::bigint[], %s::text[]) AS t(p, m)
          ON k.project_id = t.p AND k.message_id = t.m
        """,
        ([p for p, _ in keys], [m for _, m in keys]),
    )
    return {(int(p), str(m)): bytes(h) for p, m, h in cur.fetchall()}


def _json(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def insert_events(conn: psycopg.Connection, events: list[Event]) -> None:
    if not events:
        return
    with conn.cursor().copy(
        """
        COPY events (project_id, message_id, profile_id, type, event, name, properties, context,
                     "timestamp", original_timestamp, sent_at, received_at, source, payload)
        FROM STDIN
        """
    ) as copy:
        for e in events:
            copy.write_row(
                (
                    e.project_id,
                    e.message_id,
                    e.profile,
                    e.type,
                    e.event,
                    e.name,
                    _json(e.properties),
                    _json(e.context),
                    e.timestamp,
                    e.original_timestamp,
                    e.sent_at,
                    e.received_at,
                    e.source,
                    _json(e.payload),
                )
            )


def add_counters(conn: psycopg.Connection, result: BatchResult) -> None:
    """Move the per-project counters with the rows (last in the transaction: the row lock
    on a project's counters is held only for the commit)."""
    for project_id in sorted(result.per_project):
        c = result.per_project[project_id]
        conn.execute(
            """
            INSERT INTO project_counters AS pc
                (project_id, stored, duplicates, conflicting_duplicates, rejected, dead_lettered)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (project_id) DO UPDATE SET
                stored = pc.stored + EXCLUDED.stored,
                duplicates = pc.duplicates + EXCLUDED.duplicates,
                conflicting_duplicates =
                    pc.conflicting_duplicates + EXCLUDED.conflicting_duplicates,
                rejected = pc.rejected + EXCLUDED.rejected,
                dead_lettered = pc.dead_lettered + EXCLUDED.dead_lettered,
                updated_at = now()
            """,
            (
                project_id,
                c["stored"],
                c["duplicates"],
                c["conflicting"],
                c["rejected"],
                c["dead_lettered"],
            ),
        )
