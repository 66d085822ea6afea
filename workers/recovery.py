"""Recovery of queued batches a killed consumer lost (see `ingest.queue.Ledger`).

Every `KOALA_LOST_AFTER_SECONDS` an entry of the ledger comes due. The beat's sweep then
looks at each due entry and decides, without guessing:

- committed (its batch key is in `processed_batches`): the worker's own cleanup did not
  happen (Redis was away); forget it;
- held by a worker (its delivery tag is in kombu's `unacked` hash: running, held by the
  breaker, or waiting for its visibility timeout) or possibly still queued (the queue's
  oldest message was received no later than it): look again later;
- otherwise it left the queue and nobody holds it: it was lost between kombu's `BRPOP`
  and its `HSET`. Put it back at the consuming end of the queue.

`decide` is the rule (pure); `recover` does the I/O around it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg
import redis

from ingest.queue import Ledger, oldest_received

log = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


@dataclass(slots=True)
class Entry:
    task_id: str
    message: bytes
    received: datetime | None
    delivery_tag: str | None
    queue: str = ""  # the queue it was written to (its routing key)


@dataclass(slots=True)
class Decision:
    forget: list[str] = field(default_factory=list)
    later: list[str] = field(default_factory=list)
    requeue: list[Entry] = field(default_factory=list)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def entry(task_id: str, message: bytes | str) -> Entry:
    try:
        properties = orjson.loads(message)["properties"]
        tag = properties.get("delivery_tag")
        queue = str(properties["delivery_info"]["routing_key"])
    except (KeyError, TypeError, orjson.JSONDecodeError):
        tag, queue = None, ""
    raw = message.encode() if isinstance(message, str) else message
    return Entry(task_id, raw, oldest_received(raw), tag, queue)


@dataclass(frozen=True, slots=True)
class Tail:
    """The consuming end of a queue: empty, or the receipt time of its oldest message."""

    empty: bool
    oldest: datetime | None = None


def decide(
    entries: list[Entry], committed: set[str], held: set[str], tails: dict[str, Tail]
) -> Decision:
    out = Decision()
    for e in entries:
        tail = tails.get(e.queue, Tail(empty=False))
        if e.task_id in committed:
            out.forget.append(e.task_id)
        elif e.delivery_tag is not None and e.delivery_tag in held:
            out.later.append(e.task_id)
        elif not tail.empty and (
            tail.oldest is None or e.received is None or tail.oldest <= e.received
        ):
            out.later.append(e.task_id)  # FIFO: it may still be behind the oldest one
        else:
            out.requeue.append(e)
    return out


def recover(
    client: redis.Redis, conn: psycopg.Connection, prefix: str, lost_after: float
) -> Decision:
    ledger = Ledger(prefix)
    now = time.time()
    due = [_text(t) for t in client.zrangebyscore(ledger.due, "-inf", now, 0, SWEEP_LIMIT)]
    if not due:
        return Decision()
    messages = client.hmget(ledger.entries, due)
    entries = [entry(t, m) for t, m in zip(due, messages, strict=True) if m is not None]
    gone = [t for t, m in zip(due, messages, strict=True) if m is None]  # settled meanwhile
    rows = conn.execute(
        "SELECT task_id FROM processed_batches WHERE task_id = ANY(%s)", (due,)
    ).fetchall()
    committed = {str(r[0]) for r in rows}
    tags = [e.delivery_tag for e in entries if e.delivery_tag]
    held: set[str] = set()
    if tags:
        held = {t for t, v in zip(tags, client.hmget(ledger.unacked, tags), strict=True) if v}
    # Read the queues' ends after the unacked hash: a message fetched meanwhile is then
    # seen as left the queue and, at worst, put back once more (a no-op run).
    tails: dict[str, Tail] = {}
    for queue in sorted({e.queue for e in entries if e.queue}):
        last = client.lindex(prefix + queue, -1)
        tails[queue] = Tail(empty=last is None, oldest=oldest_received(last) if last else None)
    decision = decide(entries, committed, held, tails)
    pipe = client.pipeline(transaction=True)
    forget = decision.forget + gone
    if forget:
        pipe.hdel(ledger.entries, *forget)
        pipe.zrem(ledger.due, *forget)
    later = decision.later + [e.task_id for e in decision.requeue]
    if later:
        pipe.zadd(ledger.due, {t: now + lost_after for t in later})
    for e in decision.requeue:
        pipe.rpush(prefix + e.queue, e.message)  # the end kombu pops from: next in line
    pipe.execute()
    for e in decision.requeue:
        log.error(
            "batch %s was lost by a worker (left the queue, never acknowledged): queued again",
            e.task_id,
            extra={"stage": "queue", "batch": e.task_id},
        )
    return decision


def settle(client: redis.Redis, prefix: str, task_id: str) -> None:
    """A batch is committed: its ledger entry goes."""
    ledger = Ledger(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.hdel(ledger.entries, task_id)
    pipe.zrem(ledger.due, task_id)
    pipe.execute()


def postpone(client: redis.Redis, prefix: str, task_id: str, seconds: float) -> None:
    """A batch waits for a retry: not lost before its retry is due (and then some)."""
    client.zadd(Ledger(prefix).due, {task_id: time.time() + seconds}, xx=True)
