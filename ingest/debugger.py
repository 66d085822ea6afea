"""The live debugger's stream: each project's recent calls, with what became of them.

Workers add to it once per batch (workers/report.py), in the Redis pipeline that already
carries the batch's counters: no extra round trip and nothing per call on the hot path but
a small record kept in memory. The admin API and the console read it
(ingest/operations/debugger.py). One capped Redis stream per project:

- at most `PER_BATCH` calls of one project from one batch, the problems first (rejected,
  dead letters, duplicates), then its latest stored calls: a batch of 1,000 calls costs
  100 `XADD`s, not 1,000, and what an operator looks for is never crowded out;
- `XADD ... MAXLEN ~ CAPACITY`: Redis keeps the newest CAPACITY entries (a few more: it
  trims whole nodes), each payload cut to `PAYLOAD_BYTES`, so a project's stream holds at
  most about 2 MB; the key expires `KEEP_SECONDS` after the project's last batch.

Every outcome a call can have reaches a worker (the receiver's refusals travel through
the queue to the `rejections` table), so the stream sees them all; a call refused before
its project is known (`401`) belongs to no project and is not shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

CAPACITY = 500
PER_BATCH = 100
PAYLOAD_BYTES = 4096
KEEP_SECONDS = 86400

Outcome = Literal["stored", "duplicate", "rejected", "dead_letter"]
OUTCOMES: tuple[Outcome, ...] = ("stored", "duplicate", "rejected", "dead_letter")


def stream_key(prefix: str, project_id: int) -> str:
    return f"{prefix}debugger:{project_id}"


@dataclass(slots=True)
class Seen:
    """One call's outcome as a worker saw it: kept by reference until the batch reports."""

    project_id: int
    seq: int  # arrival order within the batch
    outcome: Outcome
    code: str | None  # rejection code, dead letter reason, "conflicting" for a duplicate
    call: dict[str, Any] | None  # the call; None for a rejection (its evidence is `raw`)
    raw: str | None
    received_at: str
    source: str
    replay_of: int | None = None


def pick(seen: list[Seen], limit: int = PER_BATCH) -> list[Seen]:
    """At most `limit` calls: every problem first, then the latest stored; in arrival order."""
    if len(seen) <= limit:
        return sorted(seen, key=_order)
    problems = [s for s in seen if s.outcome != "stored"]
    stored = sorted((s for s in seen if s.outcome == "stored"), key=_order)
    kept = sorted(problems, key=_order)[-limit:]
    if len(kept) < limit:
        kept += stored[len(stored) - (limit - len(kept)) :]
    return sorted(kept, key=_order)


def _order(s: Seen) -> tuple[str, int]:
    return (s.received_at, s.seq)


def entry(s: Seen) -> bytes:
    """The stream entry of one call: small, its payload cut to PAYLOAD_BYTES."""
    call = s.call
    raw = orjson.dumps(call) if call is not None else (s.raw or "").encode()
    if call is None:
        call = _parsed(raw)
    truncated = len(raw) > PAYLOAD_BYTES
    if truncated:
        raw = raw[:PAYLOAD_BYTES]
    message_id = call.get("messageId") or call.get("message_id")
    kind = call.get("type")
    label = call.get("event") if kind == "track" else call.get("name")
    return orjson.dumps(
        {
            "message_id": _short(message_id),
            "type": _short(kind),
            "event": _short(label),
            "outcome": s.outcome,
            "code": s.code,
            "received_at": s.received_at,
            "source": s.source,
            "replay_of": s.replay_of,
            "payload": raw.decode("utf-8", errors="ignore"),
            "truncated": truncated,
        }
    )


def _parsed(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _short(value: Any) -> str | None:
    """A label: text only, at most 200 characters (a wrong type shows as what it was)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:200]


def add(pipe: Any, prefix: str, seen: list[Seen]) -> int:
    """Queue a batch's entries on `pipe` (a Redis pipeline the caller executes); the number
    of entries queued."""
    by_project: dict[int, list[Seen]] = {}
    for s in seen:
        by_project.setdefault(s.project_id, []).append(s)
    added = 0
    for project_id, calls in by_project.items():
        key = stream_key(prefix, project_id)
        for s in pick(calls):
            pipe.xadd(key, {"c": entry(s)}, maxlen=CAPACITY, approximate=True)
            added += 1
        pipe.expire(key, KEEP_SECONDS)
    return added
