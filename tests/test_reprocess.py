"""Reprocessing history after a rule change, on real PostgreSQL (workers/reprocess.py,
driven by the job runner as the CLI and the workers drive it)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from conftest import Servers, queued

from ingest import reprocessing
from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.store import jobs
from ingest.store.projects import Project
from workers.jobs import Context
from workers.jobs.runner import Runner
from workers.pipeline import process

OLD = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
NEW = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS), strip_plus_tags=True)
SINCE = datetime(2026, 11, 10, tzinfo=UTC)
UNTIL = datetime(2026, 11, 12, tzinfo=UTC)
_n = itertools.count()


def call(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "messageId": f"rp-{next(_n)}",
        "receivedAt": "2026-11-23T12:00:00.000Z",
        "timestamp": at,
        **fields,
    }


def ingest(db: psycopg.Connection, project: Project, rules: Rules, *calls: dict[str, Any]) -> None:
    with db.transaction():
        process(db, [queued(project.id, *calls, received_at="2026-11-23T12:00:00.000Z")], rules)


def run_reprocess(
    servers: Servers,
    db: psycopg.Connection,
    project: Project,
    rules: Rules,
    since: datetime = SINCE,
    until: datetime = UNTIL,
    batch_size: int = 1000,
) -> dict[str, Any]:
    job_id = jobs.create(
        db, "reprocess", project.id, reprocessing.params(since, until, batch_size, rules), "cli"
    )
    settings = Settings(database_url=servers.database_url, redis_url=servers.redis_url)
    ctx = Context(settings, rules, lambda: redis.Redis.from_url(servers.redis_url))
    runner = Runner(lambda: psycopg.connect(servers.database_url), ctx)
    assert runner.run(job_id) == "done"
    job = jobs.get(db, job_id)
    assert job is not None
    return job


def live_profiles(db: psycopg.Connection, project: Project) -> dict[int, tuple[int, set[str]]]:
    rows = db.execute(
        """
        SELECT p.id, p.event_count, array_agg(i.kind || '=' || i.value) FILTER (WHERE i.kind
               IS NOT NULL)
        FROM profiles p LEFT JOIN identities i ON i.profile_id = p.id
        WHERE p.project_id = %s AND p.merged_into IS NULL GROUP BY p.id
        """,
        (project.id,),
    ).fetchall()
    return {int(p): (int(n), set(ids or ())) for p, n, ids in rows}


def events_of(db: psycopg.Connection, project: Project) -> dict[str, tuple[Any, ...]]:
    rows = db.execute(
        'SELECT message_id, profile_id, identifiers, properties, "timestamp" FROM events'
        " WHERE project_id = %s",
        (project.id,),
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def profile_holding(profiles: dict[int, tuple[int, set[str]]], identity: str) -> int:
    [found] = [p for p, (_, ids) in profiles.items() if identity in ids]
    return found


def test_email_rule_change_reprocessed_merges_the_range_and_leaves_the_rest(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    in_range = [
        call("page", "2026-11-10T10:00:00Z", anonymousId="a1", properties={"path": "/"}),
        call(
            "identify",
            "2026-11-10T10:05:00Z",
            anonymousId="a1",
            traits={"email": "Ann+News@Acme.com"},
        ),
        call(
            "identify", "2026-11-11T09:00:00Z", anonymousId="a2", traits={"email": "ann@acme.com"}
        ),
    ]
    outside = [
        call("track", "2026-11-15T08:00:00Z", anonymousId="a1", event="Pricing Viewed"),
        call(
            "identify", "2026-11-20T08:00:00Z", anonymousId="a3", traits={"email": "bob+x@acme.com"}
        ),
    ]
    ingest(db, project, OLD, *in_range, *outside)
    before = live_profiles(db, project)
    assert len(before) == 3  # ann+news, ann, bob+x: three visitors under the old rule
    events_before = events_of(db, project)

    job = run_reprocess(servers, db, project, NEW)

    assert (job["status"], job["done"], job["total"]) == ("done", 3, 3)
    assert job["counts"]["merges"] == 1 and job["counts"]["identifiers_retired"] == 1
    after = live_profiles(db, project)
    ann = profile_holding(after, "email=ann@acme.com")
    assert after[ann][1] == {"email=ann@acme.com", "anonymous_id=a1", "anonymous_id=a2"}
    assert "email=ann+news@acme.com" not in set().union(*(ids for _, ids in after.values()))
    # outside the range nothing was re-derived: bob keeps his tagged address
    bob = profile_holding(after, "email=bob+x@acme.com")
    assert bob in before and after[bob] == before[bob]
    # no event doubled or lost; counts add up to the rows
    events_after = events_of(db, project)
    assert set(events_after) == set(events_before)
    assert sum(n for n, _ in after.values()) == len(events_after) == 5
    assert after[ann][0] == sum(1 for e in events_after.values() if e[0] == ann) == 4
    # the events outside the range kept what they were derived as; only their profile
    # followed the merge of the profile they belonged to
    for message_id in (c["messageId"] for c in outside):
        assert events_after[message_id][1:] == events_before[message_id][1:]
    assert events_after[in_range[1]["messageId"]][1] == ["email:ann@acme.com", "anonymous_id:a1"]

    # Reprocessing again changes nothing and doubles nothing.
    again = run_reprocess(servers, db, project, NEW)
    assert again["counts"].get("merges", 0) == 0 and again["counts"].get("moved", 0) == 0
    assert live_profiles(db, project) == after
    assert events_of(db, project) == events_after

    # New calls follow the new rule at once.
    ingest(
        db,
        project,
        NEW,
        call(
            "track",
            "2026-11-21T08:00:00Z",
            anonymousId="a9",
            event="E",
            properties={"email": "ANN+later@acme.com"},
        ),
    )
    assert live_profiles(db, project)[ann][0] == 5


def test_reprocess_resumes_from_its_cursor_and_counts_each_event_once(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    calls = [
        call("track", f"2026-11-10T10:{i:02d}:00Z", anonymousId=f"v{i % 7}", event="E")
        for i in range(45)
    ]
    ingest(db, project, OLD, *calls)
    job_id = jobs.create(
        db, "reprocess", project.id, reprocessing.params(SINCE, UNTIL, 10, NEW), "cli"
    )
    settings = Settings(database_url=servers.database_url, redis_url=servers.redis_url)
    ctx = Context(settings, NEW, lambda: redis.Redis.from_url(servers.redis_url))
    steps: list[int] = []

    def stop_after_two(step: Any, total: int | None) -> None:
        steps.append(step.done)
        if len(steps) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does in the CLI

    runner = Runner(lambda: psycopg.connect(servers.database_url), ctx, on_step=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        runner.run(job_id)
    job = jobs.get(db, job_id)
    assert job is not None
    assert (job["status"], job["done"], job["total"]) == ("interrupted", 20, 45)
    resumed = Runner(lambda: psycopg.connect(servers.database_url), ctx).run(job_id)
    job = jobs.get(db, job_id)
    assert job is not None
    assert (resumed, job["done"], job["counts"]["reprocessed"]) == ("done", 45, 45)
    assert sum(n for n, _ in live_profiles(db, project).values()) == 45


def test_reprocess_leaves_an_event_the_rules_now_refuse_and_reports_it(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    ingest(db, project, OLD, call("track", "2026-11-10T10:00:00Z", anonymousId="z", event="E"))
    db.execute(
        "UPDATE events SET payload = payload - 'receivedAt' WHERE project_id = %s", (project.id,)
    )
    job = run_reprocess(servers, db, project, NEW)
    assert job["counts"] == {"failed": 1}
    assert job["errors"][0]["reason"] == "invalid_received_at"
    assert len(events_of(db, project)) == 1


def test_events_stored_before_identifiers_were_recorded_reprocess_like_the_others(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    ingest(
        db,
        project,
        OLD,
        call("identify", "2026-11-10T10:05:00Z", anonymousId="n1",
             traits={"email": "Ann+News@Acme.com"}),
        call("identify", "2026-11-11T09:00:00Z", anonymousId="n2",
             traits={"email": "ann@acme.com"}),
    )  # fmt: skip
    # as stored before migration 0003 recorded what each event was resolved by
    db.execute("UPDATE events SET identifiers = NULL WHERE project_id = %s", (project.id,))

    job = run_reprocess(servers, db, project, NEW)

    assert job["counts"]["identifiers_retired"] == 1 and job["counts"]["merges"] == 1
    after = live_profiles(db, project)
    assert list(after.values()) == [
        (2, {"email=ann@acme.com", "anonymous_id=n1", "anonymous_id=n2"})
    ]


def test_an_event_without_identifiers_stays_on_its_profile_pass_after_pass(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    ingest(db, project, OLD, call("identify", "2026-11-10T10:00:00Z", anonymousId="null",
                                  traits={"plan": "pro"}))  # fmt: skip
    before = live_profiles(db, project)
    for _ in range(2):
        job = run_reprocess(servers, db, project, NEW)
        assert job["counts"].get("moved", 0) == 0 and job["counts"]["reprocessed"] == 1
    assert live_profiles(db, project) == before
    total = db.execute("SELECT count(*) FROM profiles WHERE project_id = %s", (project.id,))
    assert total.fetchone() == (len(before),)  # no new, empty profile per pass


def test_a_refused_merge_is_recorded_once_however_often_history_is_reprocessed(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    ingest(
        db,
        project,
        OLD,
        call("identify", "2026-11-10T10:00:00Z", anonymousId="laptop",
             traits={"email": "x@acme.com"}),
        call("identify", "2026-11-10T11:00:00Z", anonymousId="laptop",
             traits={"email": "y@acme.com"}),
    )  # fmt: skip
    for _ in range(3):
        run_reprocess(servers, db, project, NEW)
    refused = db.execute(
        "SELECT count(*) FROM profile_merges WHERE project_id = %s AND refused", (project.id,)
    ).fetchone()
    assert refused == (1,)
    assert len(live_profiles(db, project)) == 2  # two people, never merged
