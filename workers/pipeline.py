"""One batch through the stages: normalize -> dedupe -> (resolve) -> store.

Called by the Celery task inside one database transaction; everything here is either a
pure rule (workers.normalize) or set-based SQL (workers.store), never a query per call.
"""

from __future__ import annotations

import traceback
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from workers.normalize import Event, NormalizeError, normalize
from workers.store import (
    BatchResult,
    RejectionRow,
    add_counters,
    claim_message_ids,
    insert_events,
    insert_rejections,
    known_hashes,
)


def process(
    conn: psycopg.Connection, requests: list[dict[str, Any]], blocked: frozenset[str]
) -> BatchResult:
    result = BatchResult()
    events: list[Event] = []
    rejections: list[RejectionRow] = []
    for request in requests:
        project_id = int(request["project_id"])
        source = str(request["source"])
        for r in request.get("rejected") or ():
            rejections.append(
                RejectionRow(
                    project_id,
                    request["received_at"],
                    source,
                    r.get("index"),
                    r["code"],
                    r["message"],
                    r["payload"],
                )
            )
            result.count(project_id, "rejected")
        for call in request.get("calls") or ():
            try:
                events.append(normalize(project_id, source, call, request.get("shared"), blocked))
            except NormalizeError as error:
                dead_letter(conn, project_id, call, "normalize", error.reason, error)
                result.count(project_id, "dead_lettered")

    unique = dedupe_within(events, result)
    owned = claim_message_ids(conn, unique)
    new = [e for e in unique if (e.project_id, e.message_id) in owned]
    repeated = [e for e in unique if (e.project_id, e.message_id) not in owned]
    stored_hashes = known_hashes(conn, [(e.project_id, e.message_id) for e in repeated])
    for e in repeated:
        result.count(e.project_id, "duplicates")
        if stored_hashes.get((e.project_id, e.message_id)) != e.content_hash:
            result.count(e.project_id, "conflicting")
    insert_events(conn, new)
    for e in new:
        result.count(e.project_id, "stored")
    insert_rejections(conn, rejections)
    add_counters(conn, result)
    return result


def dedupe_within(events: list[Event], result: BatchResult) -> list[Event]:
    """Keep the first of each (project, messageId) in the batch; count the rest."""
    seen: dict[tuple[int, str], Event] = {}
    unique = []
    for e in events:
        key = (e.project_id, e.message_id)
        first = seen.get(key)
        if first is None:
            seen[key] = e
            unique.append(e)
            continue
        result.count(e.project_id, "duplicates")
        if first.content_hash != e.content_hash:
            result.count(e.project_id, "conflicting")
    return unique


def dead_letter(
    conn: psycopg.Connection,
    project_id: int,
    call: dict[str, Any],
    stage: str,
    reason: str,
    error: BaseException,
) -> None:
    message_id = call.get("messageId") or call.get("message_id")
    conn.execute(
        """
        INSERT INTO dead_letters (project_id, message_id, payload, stage, reason, error, traceback)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        """,
        (
            project_id,
            message_id,
            Jsonb(call, dumps=lambda v: orjson.dumps(v).decode()),
            stage,
            reason,
            str(error),
            "".join(traceback.format_exception(error)),
        ),
    )
