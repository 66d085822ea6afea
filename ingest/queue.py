"""The queue between receiver and workers: Celery task messages on a Redis list.

The receiver is async and must not block its event loop on Celery's synchronous
`.delay()` (~0.7 ms each), so it writes the task message itself: the Celery message
protocol v2 envelope, as kombu's Redis transport stores it, pushed with redis.asyncio.
A real Celery worker consumes it like any other task (tests/test_pipeline.py proves it).

Group commit: concurrent requests share one Redis round trip. While one flush is in
flight the next requests gather; each request's answer waits for the flush holding its
calls, so `200` is only ever said for calls Redis has. A message holds whole requests
(a request's calls stay together) up to `max_calls` calls, so one task is one batch.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import pybase64
import redis.asyncio as aioredis
import redis.exceptions

from ingest import metrics
from ingest.limits import NO_LIMITS, Limits, Over, admitted, parse_over
from ingest.message import QueuedRequest

TASK_NAME = "koala.ingest"
_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def celery_message(queue: str, requests: list[dict[str, Any]], task_id: str | None = None) -> bytes:
    """A Celery protocol-2 message for `koala.ingest(requests)`."""
    calls = sum(len(r["calls"]) for r in requests)
    # when the calls entered the queue: a replay's calls enter it now, whatever their age
    fresh = [str(r["received_at"]) for r in requests if not r.get("dead_letter_ids")]
    received = min(fresh) if fresh else datetime.now(UTC).isoformat()
    return task_message(
        queue, TASK_NAME, [requests], f"<{calls} calls>", {RECEIVED_HEADER: received}, task_id
    )


class Ledger:
    """Every message the receiver queued, until a worker has committed it.

    kombu's Redis transport takes a message off the queue (`BRPOP`) and records it as
    unacknowledged (`HSET unacked`) in two steps: a consumer killed between them (SIGKILL,
    an OOM kill, a node lost; or a warm shutdown discarding a `BRPOP` reply, celery#4354)
    loses the message, and with it every call in it. So the receiver writes each message
    twice in one atomic script: on the queue, and here (`ledger:{queue}`: task id -> message;
    `ledger:{queue}:since`: task id -> when last known alive). A message's delivery tag
    is its task id, so whether a worker holds it is one HMGET on kombu's unacked hash. A
    worker deletes its entry once its batch is committed, and while it holds the message it
    refreshes the entry's time every `KOALA_HEARTBEAT_SECONDS`. `workers/recovery.py` puts
    back on the queue any entry silent for `KOALA_LOST_AFTER_SECONDS` that is not committed
    and no longer in the queue: lost between the two steps, or held by a worker that died.
    A message put back twice is harmless: the batch key makes its second run a no-op.
    """

    def __init__(self, prefix: str, queue: str) -> None:
        self.queue_key = prefix + queue
        self.entries = f"{prefix}ledger:{queue}"
        # score: when the entry was last known alive (queued, retried, or held by a worker);
        # never earlier than it was queued, so the recovery rule can compare it with the
        # queue's oldest message
        self.since = f"{prefix}ledger:{queue}:since"
        self.unacked = prefix + "unacked"  # kombu's own hash of unacknowledged messages
        # kombu's index of them: delivery tag -> when delivered, refreshed by a live worker's
        # heartbeat (workers/recovery.py); kombu redelivers what stays stale past the
        # visibility timeout
        self.unacked_index = prefix + "unacked_index"
        # task id -> its calls per project ("id calls id calls"), for the receiver's messages
        self.calls = f"{prefix}ledger:{queue}:calls"
        # project id -> calls in the ledger's receiver messages: queued or in a worker's
        # hands (the per-project queued-calls limit, ingest/limits.py)
        self.queued = f"{prefix}ledger:{queue}:queued"


# The oldest receipt time of a message's calls, in its headers: the queue's age is read
# off the oldest message without decoding its body.
RECEIVED_HEADER = "koala_received_at"


def oldest_received(message: bytes | str) -> datetime | None:
    """When the calls of a queued message were received (None if it does not say)."""
    try:
        envelope = orjson.loads(message)
        stamp = envelope["headers"].get(RECEIVED_HEADER)
        if stamp is None:
            body = orjson.loads(base64.b64decode(envelope["body"]))
            stamp = min(str(r["received_at"]) for r in body[0][0])
        parsed = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except (ValueError, KeyError, IndexError, TypeError, orjson.JSONDecodeError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def task_message(
    queue: str,
    task: str,
    args: list[Any],
    argsrepr: str,
    headers: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> bytes:
    """A Celery protocol-2 message for `task(*args)`, as kombu's Redis transport stores it
    (JSON envelope, base64 body, delivery info naming the queue), written without
    building Celery objects."""
    task_id = task_id or str(uuid.uuid4())
    body = orjson.dumps([args, {}, _EMBED])
    envelope = {
        # the same text as base64.b64encode, ~80x faster (SIMD; bench/README.md)
        "body": pybase64.b64encode_as_string(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": argsrepr,
            "kwargsrepr": "{}",
            "origin": _ORIGIN,
            "ignore_result": True,
            **(headers or {}),
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": task_id,  # kombu's unacked hash is keyed by it (see Ledger)
        },
    }
    return orjson.dumps(envelope)


def chunk_requests(requests: Iterable[QueuedRequest], max_calls: int) -> list[list[dict[str, Any]]]:
    """Group whole requests into messages of at most `max_calls` calls (a larger request
    gets a message of its own rather than being split)."""
    messages: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for request in requests:
        n = max(request.received, 1)
        if current and size + n > max_calls:
            messages.append(current)
            current, size = [], 0
        current.append(request.to_wire())
        size += n
    if current:
        messages.append(current)
    return messages


# One flush is one script: queue, ledger and counters written atomically, like a MULTI, but
# sent as one command with one reply (a MULTI of n commands costs the receiver n+2 replies
# to parse, about a quarter of its time per single call: bench/README.md). Redis refuses
# a script's *first* write when over maxmemory (nothing written: the receiver answers
# 503) and lets the rest of a started script finish, so a flush is all or nothing.
#
# The per-project limits (ingest/limits.py) are checked in the same script, before its
# first write: a flush holding calls of a project over its calls/s or queued-calls limit
# writes nothing and answers which projects are over, with what each may still send; the
# receiver drops those requests (429) and flushes the rest again. So the check costs no
# round trip of its own, and no call is counted for a request answered 429.
#
# KEYS: queue, ledger entries, ledger since, received counters, and optionally this
# minute's received counters (the console's calls-per-minute chart; kept two hours), then
# optionally the ledger's per-message project counts, the queued counters (project -> calls
# in the ledger) and this second's calls counters (kept two seconds).
# ARGV: now, n, n triples (task id, message, its project counts "id calls id calls ..."),
# then m, then m quintuples (project id, calls, requests, calls/s limit, queued limit;
# a limit of 0 is none).
# Returns {queue length} when written, else {-1, then per project over a limit: id, which
# limit ("rate" or "queued"), calls it may still send, 1 if it has none counted yet}.
ENQUEUE_SCRIPT = """
local n = tonumber(ARGV[2])
local p = 3 + 3 * n
local m = tonumber(ARGV[p])
if KEYS[7] then
  local over = {}
  for j = p + 1, p + 5 * m, 5 do
    local c, reqs = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    local rate, queued = tonumber(ARGV[j + 3]), tonumber(ARGV[j + 4])
    local which, left, fresh = nil, nil, 0
    if rate > 0 then
      local now = tonumber(redis.call('HGET', KEYS[8], ARGV[j]) or '0')
      if now + c > rate and not (now == 0 and reqs == 1) then
        which, left = 'rate', rate - now
        if now == 0 then fresh = 1 end
      end
    end
    if queued > 0 then
      local q = tonumber(redis.call('HGET', KEYS[7], ARGV[j]) or '0')
      if q + c > queued and not (q <= 0 and reqs == 1) and (left == nil or queued - q < left) then
        which, left = 'queued', queued - q
        if q <= 0 then fresh = 1 else fresh = 0 end
      end
    end
    if which then
      over[#over + 1] = ARGV[j]
      over[#over + 1] = which
      over[#over + 1] = math.max(left, 0)
      over[#over + 1] = fresh
    end
  end
  if #over > 0 then
    table.insert(over, 1, -1)
    return over
  end
end
for i = 0, n - 1 do
  local id, message = ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  redis.call('LPUSH', KEYS[1], message)
  redis.call('HSET', KEYS[2], id, message)
  redis.call('ZADD', KEYS[3], ARGV[1], id)
  if KEYS[6] then redis.call('HSET', KEYS[6], id, ARGV[5 + 3 * i]) end
end
for j = p + 1, p + 5 * m, 5 do
  redis.call('HINCRBY', KEYS[4], ARGV[j], ARGV[j + 1])
  if KEYS[5] then redis.call('HINCRBY', KEYS[5], ARGV[j], ARGV[j + 1]) end
  if KEYS[7] then
    redis.call('HINCRBY', KEYS[7], ARGV[j], ARGV[j + 1])
    if tonumber(ARGV[j + 3]) > 0 then redis.call('HINCRBY', KEYS[8], ARGV[j], ARGV[j + 1]) end
  end
end
if KEYS[5] then redis.call('EXPIRE', KEYS[5], 7200) end
if KEYS[8] then redis.call('EXPIRE', KEYS[8], 2) end
return {redis.call('LLEN', KEYS[1])}
"""

# A batch is committed (or found committed): its ledger entry goes, and the calls it held
# leave its projects' queued counters, in one script, so the counters are exactly the
# calls of the ledger's entries the receiver wrote (a replay's entry carries no project
# counts: its calls were counted received long ago). Settling twice decrements once: only
# the script that removes the entry does.
# KEYS: ledger entries, ledger since, ledger project counts, queued counters. ARGV: task ids.
SETTLE_SCRIPT = """
for _, id in ipairs(ARGV) do
  local counts = redis.call('HGET', KEYS[3], id)
  if redis.call('HDEL', KEYS[1], id) == 1 and counts then
    for project, calls in string.gmatch(counts, '(%d+) (%d+)') do
      redis.call('HINCRBY', KEYS[4], project, -tonumber(calls))
    end
  end
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
end
return 0
"""


def settle_keys(ledger: Ledger) -> list[str]:
    return [ledger.entries, ledger.since, ledger.calls, ledger.queued]


def enqueue_with_ledger(client: Any, ledger: Ledger, messages: list[tuple[str, bytes]]) -> int:
    """Queue `(task id, message)` pairs with their ledger entries, atomically, from a
    synchronous client: what the receiver's flush does, for the other producers of batches
    (replays). A message written with a bare LPUSH could be lost by a consumer killed
    between kombu's two steps, and nothing would put it back. Returns the queue's length."""
    args: list[Any] = [time.time(), len(messages)]
    for task_id, message in messages:
        args += (task_id, message, "")
    args.append(0)
    keys = [ledger.queue_key, ledger.entries, ledger.since, ledger.queue_key + ":unused"]
    return int(client.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args)[0])


def project_counts(message: list[dict[str, Any]]) -> str:
    """A message's calls per project, as the ledger keeps them: "id calls id calls"."""
    counts: dict[int, int] = {}
    for request in message:
        calls = len(request["calls"]) + len(request["rejected"])
        counts[request["project_id"]] = counts.get(request["project_id"], 0) + calls
    return " ".join(f"{project} {calls}" for project, calls in counts.items())


class QueueUnavailable(Exception):
    """Redis could not be written: the caller answers 503 and the sender retries."""


class QueueFull(Exception):
    """The queue is deeper than its ceiling: the caller answers 429 (backpressure)."""


class ProjectLimited(Exception):
    """The request's project is over one of its limits (ingest/limits.py): the caller
    answers 429 + Retry-After; nothing of the request was written or counted."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReplicationLagging(Exception):
    """The calls are queued on the primary, but fewer replicas than asked for acknowledged
    them in time: the caller answers 503 + Retry-After. A failover now could lose them, so
    the sender resends; the copy that does reach the workers twice is a duplicate."""


Pending = tuple[QueuedRequest, Limits, "asyncio.Future[None]"]


class QueueWriter:
    """Writes requests to the queue with group commit; one instance per receiver process."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        queue_key: str,
        queue_name: str,
        counters_key: str,
        max_calls: int,
        max_depth: int,
        ledger: Ledger,
        replica_acks: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._queue_key = queue_key
        self._queue_name = queue_name
        self._counters_key = counters_key
        self._max_calls = max_calls
        self._max_depth = max_depth
        self._pending: list[Pending] = []
        # project id -> (until when, epoch seconds; why): refused without asking Redis
        self._blocked: dict[int, tuple[float, ProjectLimited]] = {}
        self._rate_prefix = ledger.queue_key + ":ratelimit:"
        self._flusher: asyncio.Task[None] | None = None
        self._enqueue = client.register_script(ENQUEUE_SCRIPT)
        self._replica_acks = replica_acks
        self._replica_timeout_ms = replica_timeout_ms
        self.depth = 0  # queue length seen at the last write or poll
        self.healthy = True

    @property
    def full(self) -> bool:
        return self.depth >= self._max_depth

    async def put(self, request: QueuedRequest, limits: Limits = NO_LIMITS) -> None:
        """Return once the request is in Redis; raise QueueUnavailable / QueueFull /
        ProjectLimited otherwise."""
        if self.full:
            raise QueueFull(f"queue depth {self.depth} is at its ceiling {self._max_depth}")
        if self._blocked:
            blocked = self._blocked.get(request.project_id)
            if blocked is not None:
                if time.time() < blocked[0]:
                    raise blocked[1]
                del self._blocked[request.project_id]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((request, limits, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await future

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                refused = await self._write(batch)
            except (redis.exceptions.RedisError, OSError) as error:
                self.healthy = False
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(QueueUnavailable(str(error)))
            except ReplicationLagging as lagging:
                # Redis took the write: this receiver is healthy (every receiver sees the
                # same replicas, so failing readiness here would empty the load balancer)
                self.healthy = True
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(lagging)
            else:
                self.healthy = True
                for i, (_, _, future) in enumerate(batch):
                    if not future.done():
                        limited = refused.get(i)
                        if limited is None:
                            future.set_result(None)
                        else:
                            future.set_exception(limited)

    async def _write(self, batch: list[Pending]) -> dict[int, ProjectLimited]:
        """Write the batch's requests in one script; those of a project the script finds
        over a limit are left out (and the rest written by the script run again: a retry
        only in a flush holding a project's first calls over its limit, since from then on
        this receiver refuses that project's calls itself until the window ends). Returns
        the refused requests by their index in `batch`."""
        refused: dict[int, ProjectLimited] = {}
        kept = list(range(len(batch)))
        over = await self._write_once(batch)
        while over:
            now = time.time()
            for o in over:
                mine = [i for i in kept if batch[i][0].project_id == o.project_id]
                limits = batch[mine[0]][1]
                error = ProjectLimited(o.message(limits), o.retry_after)
                for i in mine[admitted([batch[i][0].received for i in mine], o) :]:
                    refused[i] = error
                # until the calls/s window ends; a queued limit is asked again in a second
                until = int(now) + 1 if o.which == "rate" else now + 1
                self._blocked[o.project_id] = (until, error)
            kept = [i for i in kept if i not in refused]
            over = await self._write_once([batch[i] for i in kept]) if kept else []
        return refused

    async def _write_once(self, batch: list[Pending]) -> list[Over]:
        """One run of the flush script; the projects over a limit if it wrote nothing.

        A flush of projects without limits leaves the limit keys out: no check, no queued
        counts and no per-message project counts in the ledger (what the receiver's code
        costs per call stays as it was: bench/README.md). A project's queued count is so
        the calls of its messages written while it had a limit, and its settles take off
        only those: it never counts what it did not add."""
        received: dict[int, list[int]] = {}  # project id -> calls, requests, limits
        limited = False
        for request, limits, _ in batch:
            entry = received.get(request.project_id)
            if entry is None:
                received[request.project_id] = [request.received, 1, limits.rate, limits.queued]
                limited = limited or limits is not NO_LIMITS
            else:
                entry[0] += request.received
                entry[1] += 1
        messages = chunk_requests([pending[0] for pending in batch], self._max_calls)
        now = time.time()
        args: list[Any] = [now, len(messages)]
        for message in messages:
            task_id = str(uuid.uuid4())
            args += (task_id, celery_message(self._queue_name, message, task_id))
            args.append(project_counts(message) if limited else "")
        args.append(len(received))
        for project_id, (count, requests, rate, queued) in received.items():
            args += (project_id, count, requests, rate, queued)
        keys = [self._queue_key, self._ledger.entries, self._ledger.since, self._counters_key,
                minute_key(self._counters_key, now)]  # fmt: skip
        if limited:
            keys += (self._ledger.calls, self._ledger.queued, self._rate_prefix + str(int(now)))
        if self._replica_acks:
            reply = await self._write_acked(keys, args)
        else:
            reply = await self._enqueue(keys=keys, args=args)
        if int(reply[0]) < 0:
            return parse_over(reply)
        self.depth = int(reply[0])
        metrics.GROUP_COMMITS.inc()
        return []

    async def _write_acked(self, keys: list[str], args: list[Any]) -> list[Any]:
        """The flush script, then `WAIT replicas timeout` on the same connection.

        WAIT blocks until the replicas have acknowledged every write *this connection* made
        (Redis's WAIT doc: "all the previous write commands sent in the context of the
        current connection"). The client's pool hands each command whichever idle connection
        it has (redis.asyncio `execute_command`: get_connection / release per command), so
        two separate calls may not share one: a pipeline sends both on the one connection
        it holds, in one round trip. EVAL rather than the registered script's EVALSHA: a
        pipeline runs Script objects with a SCRIPT EXISTS round trip first, and a promoted
        replica has an empty script cache anyway. Redis caches the EVAL'd script by its SHA.
        """
        pipe = self._client.pipeline(transaction=False)
        pipe.eval(ENQUEUE_SCRIPT, len(keys), *keys, *args)
        pipe.execute_command("WAIT", self._replica_acks, self._replica_timeout_ms)
        reply, acked = await pipe.execute()
        if int(reply[0]) < 0:
            return list(reply)  # nothing written: nothing for the replicas to have
        self.depth = int(reply[0])
        if int(acked) < self._replica_acks:
            metrics.GROUP_COMMITS.inc()
            raise ReplicationLagging(
                f"{acked} of {self._replica_acks} replicas acknowledged the calls"
                f" within {self._replica_timeout_ms} ms"
            )
        return list(reply)

    async def poll(self) -> None:
        """Refresh depth and health (the receiver's readiness loop calls this)."""
        try:
            self.depth = int(await self._client.llen(self._queue_key))
            self.healthy = True
        except (redis.exceptions.RedisError, OSError):
            self.healthy = False
            raise


def workers_key(prefix: str) -> str:
    """worker name -> its last heartbeat (epoch seconds), written by each worker's heartbeat
    (workers/recovery.py); a worker silent past KOALA_LOST_AFTER_SECONDS is not alive."""
    return prefix + "workers"


def minute_key(counters_key: str, now: float) -> str:
    """The calls received in the minute holding `now`, per project id."""
    return f"{counters_key}:m:{int(now) // 60}"
