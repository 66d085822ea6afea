"""The live debugger's stream (ingest/debugger.py): each call's outcome recorded by the
pipeline as it decides it, at most PER_BATCH of a project per batch with the problems
first, payloads cut to PAYLOAD_BYTES; read back through the operation the API and the
console call."""

from __future__ import annotations

import os

import orjson
import psycopg
import redis
from conftest import queued, received_now

from ingest import debugger
from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, load
from ingest.identifiers import Rules
from ingest.operations import debugger as recent_calls
from ingest.operations.actor import ADMIN_TOKEN_ACTOR
from ingest.operations.context import Ops
from ingest.store.projects import Project
from ingest.wire import Rejection
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))


def seen(outcome: str, seq: int) -> debugger.Seen:
    return debugger.Seen(1, seq, outcome, None, {"type": "track"}, None, "t", "segment")  # type: ignore[arg-type]


def test_a_batch_adds_at_most_per_batch_calls_problems_first_in_arrival_order() -> None:
    calls = [seen("stored", i) for i in range(300)]
    calls[10] = seen("dead_letter", 10)
    calls[250] = seen("duplicate", 250)
    kept = debugger.pick(calls)
    assert len(kept) == debugger.PER_BATCH
    assert [s.seq for s in kept][:2] == [10, 201]  # the problems, then the 98 latest stored
    assert [s.seq for s in kept] == sorted(s.seq for s in kept)
    assert {s.outcome for s in kept} == {"stored", "dead_letter", "duplicate"}


def test_an_entry_is_small_its_payload_cut_and_its_labels_text() -> None:
    big = {"type": "track", "event": {"not": "text"}, "messageId": "m" * 500,
           "properties": {"blob": "x" * 10_000}}  # fmt: skip
    entry = orjson.loads(debugger.entry(debugger.Seen(1, 0, "stored", None, big, None, "t", "s")))
    assert entry["truncated"] and len(entry["payload"].encode()) <= debugger.PAYLOAD_BYTES
    assert entry["event"] == '{"not":"text"}' and len(entry["message_id"]) == 200
    refused = debugger.Seen(1, 0, "rejected", "missing_event", None, '{"type":"track",'
                            '"messageId":"r-1","event":""}', "t", "s")  # fmt: skip
    entry = orjson.loads(debugger.entry(refused))
    assert (entry["message_id"], entry["type"], entry["code"]) == ("r-1", "track", "missing_event")


def test_the_pipeline_records_every_outcome_and_the_operation_reads_them_back(
    db: psycopg.Connection, project: Project
) -> None:
    calls = [
        {"type": "track", "event": "A", "userId": "u1", "messageId": "a"},
        {"type": "track", "event": "A", "userId": "u1", "messageId": "a"},  # a repeat
        {
            "type": "identify",
            "userId": "u1",
            "messageId": "i",
            "timestamp": "9999-12-31T23:59:59Z",
            "sentAt": "0001-01-01T00:00:00Z",
        },
    ]
    now = received_now()
    calls = [{**c, "receivedAt": now} for c in calls]
    refused = Rejection(1, "missing_event", "no event", '{"type":"track","messageId":"r"}')
    with db.transaction():
        result = process(
            db, [queued(project.id, *calls, received_at=now, rejected=[refused])], RULES
        )
    outcomes = {(s.outcome, s.code) for s in result.seen}
    assert ("stored", None) in outcomes and ("duplicate", None) in outcomes
    assert ("rejected", "missing_event") in outcomes
    assert "dead_letter" in {o for o, _ in outcomes}
    assert len(result.seen) == 4

    settings = load()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    pipe = client.pipeline()
    assert debugger.add(pipe, settings.redis_key_prefix, result.seen) == 4
    pipe.execute()
    ops = Ops(db, settings, ADMIN_TOKEN_ACTOR, redis_factory=lambda: client)
    answer = recent_calls.recent(ops, project.name)
    assert [c.message_id for c in answer.calls].count("a") == 2
    assert answer.last == answer.calls[-1].id
    newer = recent_calls.recent(ops, project.name, recent_calls.Query(after=answer.last))
    assert newer.calls == [] and newer.last == answer.last
    client.close()
