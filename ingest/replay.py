"""Replay dead letters through the same pipeline (normalize, dedupe, resolve, store).

Safe to press twice: letters are claimed (`pending` -> `replaying`) with SKIP LOCKED, so
two replays never send one letter twice, and the workers' dedup by messageId stores
nothing twice anyway. A replayed call that fails again returns to its own row with its
attempt count raised. The queue message is written before the claim commits: if the
commit fails, the replay still resolves its (still pending) letter. It is written with its
ledger entry, like the receiver's batches, so a worker killed holding it loses nothing
(workers/recovery.py); a letter whose replay never arrives anyway (Redis lost it) is
`pending` again after KOALA_REPLAY_STUCK_SECONDS.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import redis

from ingest.breaker import count
from ingest.config import Settings
from ingest.message import QueuedRequest
from ingest.queue import Ledger, celery_message, enqueue_with_ledger
from ingest.store import dead_letters
from ingest.store.dead_letters import Filter

CHUNK = 100


@dataclass
class ReplayResult:
    matched: int
    replayed: int
    dry_run: bool
    letters: list[dict[str, Any]]
    last_id: int | None = None  # the highest id claimed: where a run in parts goes on


def _request(letter: dict[str, Any]) -> QueuedRequest:
    received: datetime = letter["received_at"]
    call = dict(letter["payload"])
    # A corrected payload written by hand may lack the receiver's stamps: keep the originals.
    call.setdefault("receivedAt", received.isoformat())
    id_key = "message_id" if letter["source"] == "koala" else "messageId"
    if letter["message_id"] and not call.get(id_key):
        call[id_key] = letter["message_id"]
    return QueuedRequest(
        project_id=letter["project_id"],
        source=letter["source"],
        received_at=received.isoformat(),
        shared=letter["shared"],
        calls=[call],
        dead_letter_ids=[letter["id"]],
    )


def replay(
    conn: psycopg.Connection,
    client: redis.Redis,
    settings: Settings,
    selection: Filter,
    *,
    limit: int = 10_000,
    dry_run: bool = False,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay up to `limit` pending letters matching `selection` (at most `rate` a second)."""
    selection = dataclasses.replace(selection, status="pending")
    if dry_run:
        found = dead_letters.find(conn, selection, limit)
        return ReplayResult(len(found), 0, True, found)
    replayed = 0
    last_id: int | None = None
    started = time.monotonic()
    while replayed < limit:
        with conn.transaction():
            claimed = dead_letters.claim_for_replay(conn, selection, min(CHUNK, limit - replayed))
            if not claimed:
                break
            # a letter whose replay already failed again is pending once more: it is not
            # taken twice in one run (it was, when a worker was quicker than this loop)
            last_id = max(d["id"] for d in claimed)
            selection = dataclasses.replace(selection, after_id=last_id)
            task_id = str(uuid.uuid4())
            message = celery_message(
                settings.queue_name, [_request(d).to_wire() for d in claimed], task_id
            )
            ledger = Ledger(settings.redis_key_prefix, settings.queue_name)
            enqueue_with_ledger(client, ledger, [(task_id, message)])
        replayed += len(claimed)
        count(client, settings.redis_key_prefix, {"replays": len(claimed)})
        if progress is not None:
            progress(len(claimed))
        if rate:
            ahead = replayed / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    return ReplayResult(replayed, replayed, False, [], last_id)
