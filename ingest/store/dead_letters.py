"""The `dead_letters` table: calls that could not be stored, with their payload as received.

States: `pending` (waiting for an operator or the auto-replay), `replaying` (sent back
through the pipeline, not finished), `replayed` (stored, or found a duplicate, on replay),
`discarded` (an operator decided; still visible).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingest.store._json import jsonb, storable

PUBLIC = (
    "id, message_id, source, stage, reason, error, attempts, replays, status, first_failed_at,"
    " last_failed_at, replayed_at, payload"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    project_id: int
    message_id: str | None
    payload: dict[str, Any]
    stage: str
    reason: str
    error: str
    traceback: str | None
    source: str = "segment"
    shared: dict[str, Any] | None = None
    received_at: str | None = None
    replay_of: int | None = None  # the dead letter this call was replayed from


def insert(conn: psycopg.Connection, letters: list[DeadLetter]) -> None:
    """New dead letters; a replayed call that failed again goes back to its own row with
    its attempt count raised (never a second row, never a loop)."""
    fresh = [d for d in letters if d.replay_of is None]
    again = [d for d in letters if d.replay_of is not None]
    if fresh:
        with conn.cursor().copy(
            "COPY dead_letters (project_id, message_id, payload, stage, reason, error,"
            " traceback, source, shared, received_at) FROM STDIN"
        ) as copy:
            for d in fresh:
                copy.write_row(
                    (
                        d.project_id,
                        d.message_id,
                        jsonb(storable(d.payload)),
                        d.stage,
                        d.reason,
                        d.error,
                        d.traceback,
                        d.source,
                        jsonb(storable(d.shared)) if d.shared else None,
                        d.received_at,
                    )
                )
    for d in again:
        conn.execute(
            """
            UPDATE dead_letters SET status = 'pending', attempts = attempts + 1,
                stage = %s, reason = %s, error = %s, traceback = %s,
                last_failed_at = now(), updated_at = now()
            WHERE id = %s
            """,
            (d.stage, d.reason, d.error, d.traceback, d.replay_of),
        )


@dataclass(frozen=True, slots=True)
class Filter:
    project_id: int | None = None
    reason: str | None = None
    stage: str | None = None
    status: str | None = "pending"
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] | None = None
    # the automatic replay leaves old failures, and letters replayed often, to an operator
    first_failed_since: datetime | None = None
    max_replays: int | None = None
    # only letters after this id: a replay run walks the letters once, in id order
    after_id: int | None = None
    # only letters up to this id: what a dry run counted, not what failed since
    up_to_id: int | None = None


def _where(f: Filter) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    params: dict[str, Any] = {}
    if f.project_id is not None:
        clauses.append("project_id = %(project)s")
        params["project"] = f.project_id
    if f.reason:
        clauses.append("reason = %(reason)s")
        params["reason"] = f.reason
    if f.stage:
        clauses.append("stage = %(stage)s")
        params["stage"] = f.stage
    if f.status:
        clauses.append("status = %(status)s")
        params["status"] = f.status
    if f.since:
        clauses.append("last_failed_at >= %(since)s")
        params["since"] = f.since
    if f.until:
        clauses.append("last_failed_at < %(until)s")
        params["until"] = f.until
    if f.first_failed_since:
        clauses.append("first_failed_at >= %(first_failed_since)s")
        params["first_failed_since"] = f.first_failed_since
    if f.max_replays is not None:
        clauses.append("replays < %(max_replays)s")
        params["max_replays"] = f.max_replays
    if f.ids is not None:
        clauses.append("id = ANY(%(ids)s)")
        params["ids"] = list(f.ids)
    if f.after_id is not None:
        clauses.append("id > %(after_id)s")
        params["after_id"] = f.after_id
    if f.up_to_id is not None:
        clauses.append("id <= %(up_to_id)s")
        params["up_to_id"] = f.up_to_id
    return " AND ".join(clauses), params


def find(conn: psycopg.Connection, f: Filter, limit: int) -> list[dict[str, Any]]:
    where, params = _where(f)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT project_id, {PUBLIC} FROM dead_letters WHERE {where}"
            " ORDER BY id LIMIT %(limit)s",
            {**params, "limit": limit},
        )
        return cur.fetchall()


def last_id(conn: psycopg.Connection, f: Filter, limit: int) -> int | None:
    """The highest id among the first `limit` matching letters in id order (the order a
    replay run walks them): a dry run's bound for the run it previews."""
    where, params = _where(f)
    cur = conn.execute(
        f"SELECT max(id) FROM (SELECT id FROM dead_letters WHERE {where}"
        " ORDER BY id LIMIT %(limit)s) AS first",
        {**params, "limit": limit},
    )
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def counts_by_reason(conn: psycopg.Connection, f: Filter) -> dict[str, int]:
    where, params = _where(f)
    cur = conn.execute(
        f"SELECT reason, count(*) FROM dead_letters WHERE {where} GROUP BY reason ORDER BY 1",
        params,
    )
    return {str(r): int(n) for r, n in cur.fetchall()}


def counts_by_reason_and_stage(conn: psycopg.Connection, f: Filter) -> list[tuple[str, str, int]]:
    where, params = _where(f)
    cur = conn.execute(
        f"SELECT reason, stage, count(*) FROM dead_letters WHERE {where}"
        " GROUP BY reason, stage ORDER BY 3 DESC, 1, 2",
        params,
    )
    return [(str(r), str(s), int(n)) for r, s, n in cur.fetchall()]


def get(conn: psycopg.Connection, letter_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT project_id, traceback, shared, received_at, edited_at, {PUBLIC}"
            " FROM dead_letters WHERE id = %s",
            (letter_id,),
        )
        return cur.fetchone()


def claim_for_replay(conn: psycopg.Connection, f: Filter, limit: int) -> list[dict[str, Any]]:
    """Move matching pending letters to `replaying` and return what to send again. Rows
    locked by a concurrent replay are skipped, so two replays never send one letter twice."""
    where, params = _where(f)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            UPDATE dead_letters d SET status = 'replaying', replays = replays + 1,
                updated_at = now()
            FROM (SELECT id FROM dead_letters WHERE {where} ORDER BY id LIMIT %(limit)s
                  FOR UPDATE SKIP LOCKED) AS chosen
            WHERE d.id = chosen.id
            RETURNING d.id, d.project_id, d.message_id, d.source, d.shared, d.payload,
                      coalesce(d.received_at, d.first_failed_at) AS received_at
            """,
            {**params, "limit": limit},
        )
        return cur.fetchall()


def release(conn: psycopg.Connection, f: Filter, sent_before: datetime | None = None) -> int:
    """Letters `replaying` whose replay never arrived (its message lost: Redis restarted
    without the data, a failover without replica acks) go back to `pending`, for an
    operator or the automatic replay. `sent_before`: only those sent before then. If the
    replay arrives after all, it resolves the letter as usual (counted once)."""
    where, params = _where(dataclasses.replace(f, status="replaying"))
    if sent_before is not None:
        where += " AND updated_at < %(sent_before)s"
        params["sent_before"] = sent_before
    cur = conn.execute(
        f"UPDATE dead_letters SET status = 'pending', updated_at = now() WHERE {where}", params
    )
    return cur.rowcount


def finish_replay(conn: psycopg.Connection, ids: list[int]) -> list[int]:
    """Mark replayed letters done (a discarded one too: its call did get through); return
    the ids not done before. Only those move the counters, so a letter whose replay arrives
    twice is counted once."""
    if not ids:
        return []
    cur = conn.execute(
        "UPDATE dead_letters SET status = 'replayed', replayed_at = now(), updated_at = now()"
        " WHERE id = ANY(%s) AND status <> 'replayed' RETURNING id",
        (ids,),
    )
    return [int(r[0]) for r in cur.fetchall()]


def edit_payload(conn: psycopg.Connection, letter_id: int, payload: dict[str, Any]) -> bool:
    cur = conn.execute(
        "UPDATE dead_letters SET payload = %s, edited_at = now(), updated_at = now()"
        " WHERE id = %s AND status = 'pending'",
        (jsonb(payload), letter_id),
    )
    return cur.rowcount == 1


def discard(conn: psycopg.Connection, f: Filter) -> int:
    where, params = _where(f)
    cur = conn.execute(
        f"UPDATE dead_letters SET status = 'discarded', updated_at = now() WHERE {where}",
        params,
    )
    return cur.rowcount


def expire(conn: psycopg.Connection, before: datetime, limit: int) -> int:
    """Delete up to `limit` resolved (replayed or discarded) letters older than
    `before` (retention). Pending letters stay until an operator decides."""
    cur = conn.execute(
        "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
        " WHERE last_failed_at < %s AND status IN ('replayed', 'discarded') LIMIT %s)",
        (before, limit),
    )
    return cur.rowcount
