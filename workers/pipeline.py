"""One batch through the stages: normalize -> dedupe -> resolve -> store.

Called inside one database transaction (workers/batch.py). Every stage is either a pure
rule (normalize, resolve) or set-based SQL (dedupe, store): a handful of statements per
batch and project, never a query per call. A call the rules refuse becomes a dead letter
here (stage `normalize`); a call that breaks the batch's transaction is found by
workers/failure/isolation.py.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import orjson
import psycopg

from ingest.debugger import Outcome, Seen
from ingest.identifiers import Rules
from ingest.message import QueuedRequest, message_id_of
from ingest.metrics import Stage
from ingest.store import counters, dead_letters, deletions, rejections
from ingest.store.dead_letters import DeadLetter
from ingest.store.rejections import RejectionRow
from ingest.wire import DELETE_TYPE
from workers import apply
from workers.dedupe import dedupe
from workers.normalize import Event, NormalizeError, normalize
from workers.resolve import resolve

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    per_project: dict[int, Counter[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per stage
    # each call's outcome, for the live debugger (ingest/debugger.py: reported per batch)
    seen: list[Seen] = field(default_factory=list)

    def count(self, project_id: int, what: str, n: int = 1) -> None:
        self.per_project.setdefault(project_id, Counter())[what] += n

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.per_project.values())

    def reasons(self) -> dict[str, int]:
        """Dead letters written by this batch, by reason (replays that failed again too)."""
        out: dict[str, int] = {}
        for counts in self.per_project.values():
            for key, n in counts.items():
                if key.startswith("reason:"):
                    out[key] = out.get(key, 0) + n
        return out

    def add(self, other: BatchResult) -> None:
        for project_id, counts in other.per_project.items():
            self.per_project.setdefault(project_id, Counter()).update(counts)
        for stage, spent in other.seconds.items():
            self.spent(stage, spent)
        self.seen += other.seen

    @contextmanager
    def timed(self, stage: Stage) -> Iterator[None]:
        """Add the time spent in the block to `stage` (the one way stages are timed)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spent(stage, time.perf_counter() - started)

    def spent(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def dead_letter_for(
    request: QueuedRequest,
    call: dict[str, Any],
    replay_of: int | None,
    stage: str,
    reason: str,
    error: BaseException,
) -> DeadLetter:
    message_id = message_id_of(call)
    return DeadLetter(
        project_id=request.project_id,
        # text columns cannot hold NUL either: a dead letter must always be writable
        message_id=_text(message_id) if message_id is not None else None,
        payload=call,
        stage=stage,
        reason=reason,
        error=_text(str(error))[:2000],
        traceback=_text("".join(traceback.format_exception(error)))[-8000:],
        source=request.source,
        shared=request.shared,
        received_at=request.received_at,
        replay_of=replay_of,
    )


def _text(value: object) -> str:
    return str(value).replace("\x00", "\\u0000")


def rejection_rows(request: QueuedRequest, result: BatchResult) -> list[RejectionRow]:
    project_id = request.project_id
    rows = []
    for r in request.rejected:
        payload = r.payload.replace("\x00", "\\u0000")  # text cannot hold NUL
        rows.append(
            RejectionRow(
                project_id,
                request.received_at,
                request.source,
                r.index,
                r.code,
                r.message,
                payload,
            )
        )
        result.count(project_id, "rejected")
        result.seen.append(
            Seen(project_id, -1, "rejected", r.code, None, payload, request.received_at,
                 request.source)
        )  # fmt: skip
    return rows


def _saw(
    result: BatchResult,
    arrived: dict[int, tuple[int, QueuedRequest]],
    event: Event,
    outcome: Outcome,
    code: str | None,
) -> None:
    seq, request = arrived[id(event)]
    result.seen.append(
        Seen(event.project_id, seq, outcome, code, event.payload, None, request.received_at,
             request.source, event.replay_of)
    )  # fmt: skip


SUPPRESSED = "suppressed"


def _suppressible(event: Event) -> list[str]:
    """The `kind:value` identifiers a call names, as a deletion records them; none for a
    delete call (a second one is carried out) or a replayed dead letter (an operator's
    explicit choice, and already counted as a dead letter)."""
    if event.type == DELETE_TYPE or event.replay_of is not None:
        return []
    named = [f"{kind}:{value}" for kind, value in event.ids.pairs()]
    if event.previous_id:  # an alias naming the deleted user as its previous id
        named += [f"user_id:{event.previous_id}", f"anonymous_id:{event.previous_id}"]
    return named


def suppress(
    conn: psycopg.Connection,
    events: list[Event],
    days: int,
    result: BatchResult,
    arrived: dict[int, tuple[int, QueuedRequest]],
) -> tuple[list[Event], list[RejectionRow]]:
    """Delete and suppress: calls naming a user deleted in the last `days` days (and not
    lifted) are refused as `suppressed`, one query for the batch. The rejection keeps no
    personal data (the person asked to be erased): the call's type, messageId and the
    deletion's id. Before dedupe, so a suppressed call's messageId is not claimed."""
    named: dict[int, set[str]] = {}
    for event in events:
        found = _suppressible(event)
        if found:
            named.setdefault(event.project_id, set()).update(found)
    hits = deletions.suppressing(conn, named, days)
    if not hits:
        return events, []
    kept: list[Event] = []
    rows: list[RejectionRow] = []
    for event in events:
        deletion = next(
            (hits[k] for i in _suppressible(event) if (k := (event.project_id, i)) in hits), None
        )
        if deletion is None:
            kept.append(event)
            continue
        seq, request = arrived[id(event)]
        payload = orjson.dumps(
            {"type": event.type, "messageId": event.message_id, "deletion": deletion}
        ).decode()
        rows.append(
            RejectionRow(
                event.project_id,
                request.received_at,
                request.source,
                None,
                SUPPRESSED,
                f"the call names a user deleted (deletion {deletion}): suppressed for"
                f" {days} days after a deletion (KOALA_SUPPRESS_DAYS)",
                payload,
            )
        )
        result.count(event.project_id, "rejected")
        result.seen.append(
            Seen(event.project_id, seq, "rejected", SUPPRESSED, None, payload,
                 request.received_at, request.source)
        )  # fmt: skip
    return kept, rows


def process(
    conn: psycopg.Connection, requests: Sequence[QueuedRequest], rules: Rules
) -> BatchResult:
    result = BatchResult()
    events: list[Event] = []
    refused: list[RejectionRow] = []
    dead: list[DeadLetter] = []
    arrived: dict[int, tuple[int, QueuedRequest]] = {}  # id(event): its order and request
    seq = 0
    # each project's rules (its company exceptions folded in) once per batch, not per call
    project_rules: dict[int, Rules] = {}
    with result.timed(Stage.NORMALIZE):
        for request in requests:
            project_id = request.project_id
            rules_of = project_rules.get(project_id)
            if rules_of is None:
                rules_of = project_rules[project_id] = rules.for_project(project_id)
            refused += rejection_rows(request, result)
            for call, replay_of in zip(request.calls, request.replay_of(), strict=True):
                seq += 1
                try:
                    event = normalize(project_id, request.source, call, request.shared, rules_of)
                except NormalizeError as error:
                    log.warning(
                        "call dead-lettered: %s",
                        error,
                        extra={"stage": "normalize", "project": project_id, "reason": error.reason,
                               "message_id": message_id_of(call)},
                    )  # fmt: skip
                    dead.append(
                        dead_letter_for(request, call, replay_of, "normalize", error.reason, error)
                    )
                    if replay_of is None:  # a failed replay is already counted as dead
                        result.count(project_id, "dead_lettered")
                    result.count(project_id, f"reason:{error.reason}")
                    result.seen.append(
                        Seen(project_id, seq, "dead_letter", error.reason, call, None,
                             request.received_at, request.source, replay_of)
                    )  # fmt: skip
                    continue
                event.replay_of = replay_of
                events.append(event)
                arrived[id(event)] = (seq, request)

    if rules.suppress_days > 0 and events:
        with result.timed(Stage.DELETE):
            events, suppressed = suppress(conn, events, rules.suppress_days, result, arrived)
        refused += suppressed

    with result.timed(Stage.DEDUPE):
        deduped = dedupe(conn, events)
    conflicting = {id(e) for e in deduped.conflicting}  # a subset of the duplicates
    for e in deduped.duplicates:
        result.count(e.project_id, "duplicates")
        _saw(result, arrived, e, "duplicate", "conflicting" if id(e) in conflicting else None)
    for e in deduped.conflicting:
        result.count(e.project_id, "conflicting_duplicates")
    for e in deduped.new:
        _saw(result, arrived, e, "stored", None)

    # Delete calls are carried out after the batch's other calls are stored: a delete
    # erases everything of its person stored up to and including its batch.
    deletes = [e for e in deduped.new if e.type == DELETE_TYPE]
    keep = [e for e in deduped.new if e.type != DELETE_TYPE] if deletes else deduped.new
    by_project = sorted(keep, key=lambda e: e.project_id)  # stable: arrival order kept
    for project_id, group in groupby(by_project, key=lambda e: e.project_id):
        batch = list(group)
        with result.timed(Stage.STORE):
            graph = apply.load_graph(conn, project_id, batch)
        with result.timed(Stage.RESOLVE):
            plan = resolve(batch, graph)
        with result.timed(Stage.STORE):
            apply.apply_plan(conn, project_id, batch, plan, graph, rules.signals)
        result.count(project_id, "stored", len(batch))
        result.count(project_id, "merges", len(plan.merges))
        result.count(project_id, "merges_refused", len(plan.refused))

    for event in deletes:
        with result.timed(Stage.DELETE):
            erased = apply.erase(conn, event)
        result.count(event.project_id, "stored")  # carried out: kept in `deletions`
        result.count(event.project_id, "deletions")
        log.info(
            "delete call carried out: %s",
            erased,
            extra={"stage": "delete", "project": event.project_id, "message_id": event.message_id},
        )

    replayed = {e.replay_of: e.project_id for e in events if e.replay_of is not None}
    resolved = set(dead_letters.finish_replay(conn, sorted(replayed)))
    for letter_id, project_id in replayed.items():
        if letter_id in resolved:
            result.count(project_id, "dead_lettered", -1)  # now stored or a duplicate
            result.count(project_id, "replays_resolved")
        else:
            # a second copy of a letter already replayed: necessarily a duplicate of the
            # first copy, and that call is already counted
            result.count(project_id, "duplicates", -1)
            result.count(project_id, "replay_copies")
    rejections.insert(conn, refused)
    dead_letters.insert(conn, dead)
    counters.add(conn, result.per_project)
    return result
