"""One batch through the stages: normalize -> dedupe -> resolve -> store.

Called by the Celery task inside one database transaction. Every stage is either a pure
rule (normalize, resolve) or set-based SQL (dedupe, store): a handful of statements per
batch and project, never a query per call.
"""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import psycopg

from ingest.store import counters, dead_letters, rejections
from ingest.store.dead_letters import DeadLetter
from ingest.store.rejections import RejectionRow
from workers import store
from workers.dedupe import dedupe
from workers.normalize import Event, NormalizeError, normalize
from workers.resolve import resolve


@dataclass(slots=True)
class BatchResult:
    per_project: dict[int, Counter[str]] = field(default_factory=dict)

    def count(self, project_id: int, what: str, n: int = 1) -> None:
        self.per_project.setdefault(project_id, Counter())[what] += n

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.per_project.values())


def process(
    conn: psycopg.Connection, requests: list[dict[str, Any]], blocked: frozenset[str]
) -> BatchResult:
    result = BatchResult()
    events: list[Event] = []
    refused: list[RejectionRow] = []
    dead: list[DeadLetter] = []
    for request in requests:
        project_id = int(request["project_id"])
        source = str(request["source"])
        for r in request.get("rejected") or ():
            refused.append(
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
                dead.append(_dead_letter(project_id, call, "normalize", error.reason, error))
                result.count(project_id, "dead_lettered")

    deduped = dedupe(conn, events)
    for e in deduped.duplicates:
        result.count(e.project_id, "duplicates")
    for e in deduped.conflicting:
        result.count(e.project_id, "conflicting_duplicates")

    by_project = sorted(deduped.new, key=lambda e: e.project_id)  # stable: arrival order kept
    for project_id, group in groupby(by_project, key=lambda e: e.project_id):
        batch = list(group)
        graph = store.load_graph(conn, project_id, batch)
        plan = resolve(batch, graph)
        store.apply(conn, project_id, batch, plan, graph)
        result.count(project_id, "stored", len(batch))

    rejections.insert(conn, refused)
    dead_letters.insert(conn, dead)
    counters.add(conn, result.per_project)
    return result


def _dead_letter(
    project_id: int, call: dict[str, Any], stage: str, reason: str, error: BaseException
) -> DeadLetter:
    return DeadLetter(
        project_id=project_id,
        message_id=call.get("messageId") or call.get("message_id"),
        payload=call,
        stage=stage,
        reason=reason,
        error=str(error),
        traceback="".join(traceback.format_exception(error)),
    )
