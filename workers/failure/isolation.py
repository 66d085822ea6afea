"""Poison isolation: the calls that break a batch for good, found alone and dead-lettered.

A batch that fails with anything but a transient error (workers/failure/policy.py) is run
again in savepoints, halved until each failing call is alone: only it becomes a dead letter
(stage `store`, its error's class as reason), and the rest of the batch is stored. A `\u0000`
that jsonb refuses, say, costs its own call and no other (tests/test_dead_letters.py).
A batch whose transient failures outlast the retries has all its calls dead-lettered
(`dead_letter_all`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import psycopg

from ingest.debugger import Seen
from ingest.identifiers import Rules
from ingest.message import QueuedRequest, message_id_of
from ingest.store import counters, dead_letters, rejections
from ingest.store.dead_letters import DeadLetter
from ingest.store.rejections import RejectionRow
from workers.failure.policy import RETRYABLE
from workers.pipeline import BatchResult, dead_letter_for, process, rejection_rows

log = logging.getLogger(__name__)


def split_units(requests: Sequence[QueuedRequest]) -> list[QueuedRequest]:
    """One request per call (rejections in a unit of their own), for isolation."""
    units = []
    for request in requests:
        if request.rejected:
            units.append(replace(request, calls=[], dead_letter_ids=None))
        for call, replay_of in zip(request.calls, request.replay_of(), strict=True):
            units.append(
                replace(
                    request,
                    calls=[call],
                    rejected=[],
                    dead_letter_ids=[replay_of] if replay_of else None,
                )
            )
    return units


def isolate(
    conn: psycopg.Connection, requests: Sequence[QueuedRequest], rules: Rules
) -> BatchResult:
    """Process a batch that failed for good: bisect it in savepoints until each failing
    call is alone, dead-letter those (stage `store`), store everything else. A transient
    error meanwhile is raised: the whole batch is retried."""
    result = BatchResult()
    _bisect(conn, split_units(requests), rules, result)
    return result


def _bisect(
    conn: psycopg.Connection,
    units: list[QueuedRequest],
    rules: Rules,
    result: BatchResult,
) -> None:
    if not units:
        return
    try:
        with conn.transaction():
            result.add(process(conn, units, rules))
        return
    except RETRYABLE:
        raise
    except Exception as error:
        if len(units) > 1:
            middle = len(units) // 2
            _bisect(conn, units[:middle], rules, result)
            _bisect(conn, units[middle:], rules, result)
            return
        [unit] = units
        [poison] = unit.calls or [{}]
        log.warning(
            "poison call isolated: %s",
            error,
            extra={"stage": "store", "project": unit.project_id, "reason": type(error).__name__,
                   "message_id": message_id_of(poison)},
        )  # fmt: skip
        with conn.transaction():
            letters = [
                dead_letter_for(unit, call, replay_of, "store", type(error).__name__, error)
                for call, replay_of in zip(unit.calls, unit.replay_of(), strict=True)
            ]
            dead_letters.insert(conn, letters)
            fresh = [d for d in letters if d.replay_of is None]
            dead = BatchResult()
            dead.count(unit.project_id, f"reason:{type(error).__name__}", len(letters))
            dead.seen += [
                Seen(unit.project_id, 0, "dead_letter", d.reason, d.payload, None,
                     unit.received_at, unit.source, d.replay_of)
                for d in letters
            ]  # fmt: skip
            if fresh:
                dead.count(unit.project_id, "dead_lettered", len(fresh))
                counters.add(conn, dead.per_project)
            result.add(dead)


def dead_letter_all(
    conn: psycopg.Connection, requests: Sequence[QueuedRequest], reason: str, error: BaseException
) -> BatchResult:
    """Every call of a batch that kept failing transiently becomes a dead letter (stage
    `store`); its rejections are still recorded."""
    result = BatchResult()
    letters: list[DeadLetter] = []
    refused: list[RejectionRow] = []
    for unit in split_units(requests):
        refused += rejection_rows(unit, result)
        for call, replay_of in zip(unit.calls, unit.replay_of(), strict=True):
            letters.append(dead_letter_for(unit, call, replay_of, "store", reason, error))
            result.seen.append(
                Seen(unit.project_id, len(letters), "dead_letter", reason, call, None,
                     unit.received_at, unit.source, replay_of)
            )  # fmt: skip
            if replay_of is None:
                result.count(unit.project_id, "dead_lettered")
            result.count(unit.project_id, f"reason:{reason}")
    rejections.insert(conn, refused)
    dead_letters.insert(conn, letters)
    counters.add(conn, result.per_project)
    return result
