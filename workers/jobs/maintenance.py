"""The scheduled jobs that keep the store healthy, as `Job` kinds the runner drives:

- `auto_replay`: dead letters whose failure was transient (`transient_exhausted`: the
  store kept failing for the whole retry window) are replayed, within a budget per run,
  if they are younger than a maximum age and were not replayed too often already. A
  permanent failure (a call the rules refuse, a poison call) is never replayed by it;
- `expire`: deduplication keys past the window, committed-batch keys past any
  redelivery, and, with a retention set, events, Engage audience history (each
  profile's latest call per computation stays: its state), refusals, resolved dead
  letters, merge records and finished job runs past the retention; in chunks;
- `identity_check`: events carrying an identifier that another profile holds (two
  profiles that should be one, say after a race or a rule change) are resolved again,
  so the two merge through the same guarded merge as live batches, or the refusal is
  recorded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, ClassVar

import psycopg

from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.replay import replay
from ingest.store import (
    activity,
    audiences,
    batches,
    dead_letters,
    events,
    jobs,
    merges,
    message_ids,
    projects,
    rejections,
)
from workers.failure.policy import TRANSIENT_EXHAUSTED
from workers.jobs.base import Context, Job, Step
from workers.reprocess import reprocess

REPLAY_CHUNK = 100
DELETE_CHUNK = 10_000
SCAN_IDS = 20_000
REPAIR_LIMIT = 500
# Ids re-checked by each identity check at the end of the previous one's range (far more
# than the batches in flight at any moment: a batch is at most 1,000 calls).
OVERLAP_IDS = 200_000


def _transient(settings: Settings) -> dead_letters.Filter:
    return dead_letters.Filter(
        reason=TRANSIENT_EXHAUSTED,
        status="pending",
        first_failed_since=datetime.now(UTC) - timedelta(hours=settings.auto_replay_max_age_hours),
        max_replays=settings.auto_replay_max_replays,
    )


@dataclass(slots=True)
class AutoReplayJob:
    kind: ClassVar[str] = "auto_replay"
    budget: int
    ctx: Context

    def total(self, conn: psycopg.Connection) -> int | None:
        matching = sum(dead_letters.counts_by_reason(conn, _transient(self.ctx.settings)).values())
        return min(matching, self.budget)

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        sent = int(cursor or 0)
        want = min(REPLAY_CHUNK, self.budget - sent)
        if want <= 0:
            return Step(sent, finished=True)
        done = replay(
            conn, self.ctx.redis(), self.ctx.settings, _transient(self.ctx.settings), limit=want
        )
        return Step(
            sent + done.replayed,
            done=done.replayed,
            counts=Counter(replayed=done.replayed),
            finished=done.replayed < want,
        )


@dataclass(slots=True)
class ExpireJob:
    """Stages run in order, a chunk of deletes per step; the cursor is the stage index."""

    kind: ClassVar[str] = "expire"
    settings: Settings
    project_ids: list[int]  # fixed when the run is created: the stage list never shifts

    def stages(self, conn: psycopg.Connection) -> list[tuple[str, Any]]:
        s = self.settings
        out: list[tuple[str, Any]] = [
            ("dedup_keys", lambda c: message_ids.expire(c, s.dedup_window_days, DELETE_CHUNK)),
            (
                "batch_keys",
                lambda c: batches.expire(c, max(86_400, s.visibility_timeout * 4), DELETE_CHUNK),
            ),
            (
                "stuck_replays",
                lambda c: dead_letters.release(
                    c,
                    dead_letters.Filter(),
                    datetime.now(UTC) - timedelta(seconds=s.replay_stuck_seconds),
                ),
            ),
        ]
        if s.retention_days:
            before = datetime.now(UTC) - timedelta(days=s.retention_days)
            for project_id in self.project_ids:
                out.append(
                    ("events", lambda c, p=project_id: events.expire(c, p, before, DELETE_CHUNK))
                )
                out.append(
                    (
                        "audience_history",
                        lambda c, p=project_id: audiences.expire(c, p, before, DELETE_CHUNK),
                    )
                )
                # activity of the days wholly before the cutoff (the cutoff's own day keeps
                # its counts until the next day's run)
                out.append(
                    (
                        "activity",
                        lambda c, p=project_id: activity.expire(c, p, before.date(), DELETE_CHUNK),
                    )
                )
            out += [
                ("rejections", lambda c: rejections.expire(c, before, DELETE_CHUNK)),
                ("dead_letters", lambda c: dead_letters.expire(c, before, DELETE_CHUNK)),
                ("merges", lambda c: merges.expire(c, before, DELETE_CHUNK)),
                ("jobs", lambda c: jobs.expire(c, before)),
            ]
        return out

    def total(self, conn: psycopg.Connection) -> int | None:
        return None  # how many rows are past their time is not worth a count of its own

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        stage = int(cursor or 0)
        stages = self.stages(conn)
        if stage >= len(stages):
            return Step(stage, finished=True)
        name, delete = stages[stage]
        deleted = int(delete(conn))
        following = stage + (deleted < DELETE_CHUNK)
        return Step(
            following,
            done=deleted,
            counts=Counter({name: deleted}),
            finished=following >= len(stages),
        )


@dataclass(slots=True)
class IdentityCheckJob:
    """Scans the events stored since the previous check (ids in (from_id, up_to]) in
    ranges; the cursor is the last id checked."""

    kind: ClassVar[str] = "identity_check"
    from_id: int
    up_to: int
    rules: Rules

    @staticmethod
    def params(conn: psycopg.Connection) -> dict[str, Any]:
        """From where the previous check ended, less an overlap: an event whose batch was
        still uncommitted when that check read the last id has a lower id than it."""
        previous = jobs.recent_done(conn, "identity_check")
        from_id = max(0, int(previous["cursor"] or 0) - OVERLAP_IDS) if previous else 0
        return {"from_id": from_id, "up_to": events.max_id(conn)}

    def total(self, conn: psycopg.Connection) -> int | None:
        return max(0, self.up_to - self.from_id)

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        after = int(cursor) if cursor is not None else self.from_id
        if after >= self.up_to:
            return Step(after, finished=True)
        upto = min(after + SCAN_IDS, self.up_to)
        found = events.split_identities(conn, after, upto, REPAIR_LIMIT)
        counts: Counter[str] = Counter(candidates=len(found))
        errors: list[dict[str, Any]] = []
        ids = sorted({int(f["id"]) for f in found})
        rows = events.by_ids(conn, ids)
        project_of = {int(f["id"]): int(f["project_id"]) for f in found}
        for project_id, group in groupby(
            sorted(rows, key=lambda r: project_of[r["id"]]), key=lambda r: project_of[r["id"]]
        ):
            outcome = reprocess(conn, project_id, list(group), self.rules)
            counts.update(outcome.counts)
            errors += outcome.errors
        repaired = counts["merges"] + counts["moved"] + counts["merges_refused"]
        # More candidates than one step repairs: look at the same range again, unless this
        # step changed nothing (then what is left is not repairable: move on).
        following = after if len(found) >= REPAIR_LIMIT and repaired else upto
        return Step(
            following,
            done=following - after,
            counts=counts,
            errors=errors,
            finished=following >= self.up_to,
        )


def build_auto_replay(row: dict[str, Any], ctx: Context) -> Job:
    return AutoReplayJob(int(row["params"].get("budget") or ctx.settings.auto_replay_budget), ctx)


def build_expire(row: dict[str, Any], ctx: Context) -> Job:
    return ExpireJob(ctx.settings, [int(p) for p in row["params"].get("projects", [])])


def build_identity_check(row: dict[str, Any], ctx: Context) -> Job:
    params = row["params"]
    return IdentityCheckJob(int(params["from_id"]), int(params["up_to"]), ctx.rules)


def params_auto_replay(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    return {"budget": settings.auto_replay_budget}


def params_expire(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    return {"projects": projects.all_ids(conn)}


def params_identity_check(conn: psycopg.Connection, settings: Settings) -> dict[str, Any]:
    return IdentityCheckJob.params(conn)
