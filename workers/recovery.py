"""Recovery of queued batches a killed worker held or lost (see `ingest.queue.Ledger`).

A live worker heartbeats what it holds (`heartbeat`, every `KOALA_HEARTBEAT_SECONDS`, from
its consumer process): each held message's time in kombu's unacked index and in the
ledger is set to now. So a message is silent only if nobody alive holds it. Before
heartbeats, a batch held by a worker that was SIGKILLed waited for kombu's visibility
timeout (900 s then), and a timeout short enough to fix that redelivered every long batch
(issue #13); now the timeout only bounds how long a dead holder's messages wait, and a
slow batch in a live worker is never taken from it.

An entry of the ledger silent for `KOALA_LOST_AFTER_SECONDS` comes due. The beat's sweep
looks at each due entry and decides, without guessing:

- committed (its batch key is in `processed_batches`): the worker's own cleanup did not
  happen (Redis was away); forget it;
- held (its delivery tag, which is its task id, is in kombu's `unacked` hash) yet silent:
  its holder died (SIGKILL, OOM, a node lost). Take it from kombu's unacked records and
  put it back on the queue now, instead of after the visibility timeout;
- possibly still queued (the queue's oldest message was queued no later than it): look
  again later;
- otherwise it left the queue and nobody holds it: it was lost between kombu's `BRPOP`
  and its `HSET`. Put it back at the consuming end of the queue.

The sweep reads no message unless it puts it back: a large backlog costs it a sorted-set
range, one SQL query and one HMGET of flags. `decide` is the rule (pure); `recover` does
the I/O around it. A worker that only looked dead (its consumer stalled for
`KOALA_LOST_AFTER_SECONDS`, three heartbeats at least) costs a second run that finds the
batch committed and does nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import redis

from ingest.queue import SETTLE_SCRIPT, Ledger, oldest_received, settle_keys, workers_key
from ingest.store import batches

log = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    task_id: str
    queued: datetime  # when it was queued (never earlier than that: safe for the rule)


@dataclass(frozen=True, slots=True)
class Tail:
    """The consuming end of the queue: empty, or when its oldest message was queued."""

    empty: bool
    oldest: datetime | None = None


@dataclass(slots=True)
class Decision:
    forget: list[str] = field(default_factory=list)
    later: list[str] = field(default_factory=list)
    requeue: list[str] = field(default_factory=list)
    # of `requeue`: held by a worker that stopped heartbeating (taken from kombu's records)
    abandoned: list[str] = field(default_factory=list)


def decide(
    entries: list[Entry],
    committed: set[str],
    held: dict[str, datetime | None],
    tail: Tail,
    silent_before: datetime,
) -> Decision:
    """What to do with each due entry (its ledger time older than `silent_before`, that is
    KOALA_LOST_AFTER_SECONDS ago).

    `held`: the entries a consumer holds (in kombu's unacked hash), each with its time in
    kombu's unacked index: when kombu delivered it, or its holder's last heartbeat (None:
    not in the index). A held entry is abandoned only if that time is silent too. The
    ledger's time alone says nothing of the holder: it is when the message was queued
    until the holder's first heartbeat, so a message that waited in the queue for
    lost_after (a backlog, workers starting) and was taken less than a heartbeat ago looked
    "held yet silent" and was queued again under its live holder: a second worker ran it,
    the exactly-once guard skipping it (tests/test_recovery.py, the slow batch, about one
    run in five; a failing run under Redis MONITOR: queued while the workers started,
    taken 5.8 s later, the sweep's due read at 6.5 s, the first heartbeat at 6.8 s, lost
    after 5 s). kombu writes the index time in the same pipeline as the unacked hash
    (`QoS.append`), so a message just taken is never silent there."""
    out = Decision()
    for e in entries:
        if e.task_id in committed:
            out.forget.append(e.task_id)
        elif e.task_id in held:
            alive = held[e.task_id]
            if alive is not None and alive >= silent_before:
                out.later.append(e.task_id)  # delivered or heartbeated within lost_after
            else:
                out.requeue.append(e.task_id)  # a live holder would have heartbeated it
                out.abandoned.append(e.task_id)
        elif not tail.empty and (tail.oldest is None or tail.oldest <= e.queued):
            out.later.append(e.task_id)  # FIFO: it may still be behind the oldest one
        else:
            out.requeue.append(e.task_id)
    return out


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def recover(
    client: redis.Redis, conn: psycopg.Connection, prefix: str, queue: str, lost_after: float
) -> Decision:
    ledger = Ledger(prefix, queue)
    now = time.time()
    due: list[tuple[bytes, float]] = client.zrangebyscore(  # type: ignore[assignment]
        ledger.since, "-inf", now - lost_after, 0, SWEEP_LIMIT, withscores=True
    )
    if not due:
        return Decision()
    # score: last known alive, never before it was queued (see Ledger)
    entries = [Entry(_text(t), datetime.fromtimestamp(float(score), UTC)) for t, score in due]
    ids = [e.task_id for e in entries]
    committed = batches.committed(conn, ids)
    held_ids = [t for t, v in zip(ids, client.hmget(ledger.unacked, ids), strict=True) if v]
    # kombu's own time for each: delivered, or last heartbeated (ZMSCORE: Redis 6.2, which
    # kombu's restore_visible needs too, for ZRANGE BYSCORE REV)
    times = client.zmscore(ledger.unacked_index, held_ids) if held_ids else []
    held = {
        t: None if s is None else datetime.fromtimestamp(float(s), UTC)
        for t, s in zip(held_ids, times, strict=True)
    }
    # Read the queue's end after the unacked hash: a message fetched meanwhile is then seen
    # as left the queue and, at worst, put back once more (a no-op run).
    last = client.lindex(ledger.queue_key, -1)
    tail = Tail(empty=last is None, oldest=oldest_received(last) if last else None)
    decision = decide(entries, committed, held, tail, datetime.fromtimestamp(now - lost_after, UTC))
    messages = client.hmget(ledger.entries, decision.requeue) if decision.requeue else []
    gone = [t for t, m in zip(decision.requeue, messages, strict=True) if m is None]
    back = [(t, m) for t, m in zip(decision.requeue, messages, strict=True) if m is not None]
    decision.requeue = [t for t, _ in back]
    decision.abandoned = [t for t in decision.abandoned if t in decision.requeue]
    decision.forget += gone  # settled meanwhile
    pipe = client.pipeline(transaction=True)
    if decision.forget:
        # as a worker's settle: their calls leave their projects' queued counts
        pipe.eval(SETTLE_SCRIPT, 4, *settle_keys(ledger), *decision.forget)
    if decision.abandoned:
        # kombu would restore them too after the visibility timeout: a second, no-op run
        pipe.hdel(ledger.unacked, *decision.abandoned)
        pipe.zrem(ledger.unacked_index, *decision.abandoned)
    later = decision.later + decision.requeue
    if later:
        pipe.zadd(ledger.since, dict.fromkeys(later, now))
    for _, message in back:
        pipe.rpush(ledger.queue_key, message)  # the end kombu pops from: next in line
    pipe.execute()
    for task_id in decision.requeue:
        log.error(
            "batch %s was %s: queued again",
            task_id,
            "held by a worker that stopped heartbeating"
            if task_id in decision.abandoned
            else "lost by a worker (left the queue, never acknowledged)",
            extra={"stage": "queue", "batch": task_id},
        )
    return decision


@dataclass(frozen=True, slots=True)
class Held:
    """A message a worker's consumer holds unacknowledged (prefetched, running, waiting for
    a retry's countdown or for the breaker)."""

    delivery_tag: str
    task_id: str | None
    queue: str | None


def heartbeat(
    client: redis.Redis,
    prefix: str,
    held: list[Held],
    now: float | None = None,
    worker: str | None = None,
) -> None:
    """Mark what a live worker holds as alive: its time in kombu's unacked index (kombu
    redelivers entries older than the visibility timeout) and in the ledger (the sweep above)
    becomes now. `XX`: an entry already acknowledged or settled is not brought back. The
    worker itself is marked alive in `workers` (what the console counts as workers alive).
    One round trip per worker and heartbeat, whatever it holds."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    if worker:
        pipe.hset(workers_key(prefix), worker, now)
    if not held:
        pipe.execute()
        return
    pipe.zadd(Ledger(prefix, "").unacked_index, {h.delivery_tag: now for h in held}, xx=True)
    by_queue: dict[str, list[str]] = {}
    for h in held:
        if h.task_id and h.queue:
            by_queue.setdefault(h.queue, []).append(h.task_id)
    for queue, task_ids in by_queue.items():
        pipe.zadd(Ledger(prefix, queue).since, dict.fromkeys(task_ids, now), xx=True)
    pipe.execute()


def settle(client: redis.Redis, prefix: str, queue: str, task_id: str) -> None:
    """A batch is committed: its ledger entry goes, and its calls leave their projects'
    queued counts (ingest/queue.py SETTLE_SCRIPT): one round trip, as before the counts."""
    client.eval(SETTLE_SCRIPT, 4, *settle_keys(Ledger(prefix, queue)), task_id)


def postpone(client: redis.Redis, prefix: str, queue: str, task_id: str, seconds: float) -> None:
    """A batch waits `seconds` for a retry: alive until then (and lost_after more)."""
    client.zadd(Ledger(prefix, queue).since, {task_id: time.time() + seconds}, xx=True)
