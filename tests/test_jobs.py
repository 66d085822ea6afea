"""The job runner (workers/jobs/runner.py) and the job endpoints, on real PostgreSQL and Redis:
one runner at a time, takeover of a dead runner, cancel, and a reprocessing started by
the API and run by a real worker in several time slices."""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from conftest import Servers, queued, start_receiver, start_worker, wait_for

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.store import jobs, projects
from ingest.store.projects import Project
from workers.jobs import Context, Job, Step
from workers.jobs.runner import Runner
from workers.pipeline import process

TOKEN = "jobs-token"
RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
_n = itertools.count()


def context(servers: Servers) -> Context:
    settings = Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        redis_key_prefix=servers.prefix,
    )
    return Context(settings, RULES, lambda: redis.Redis.from_url(servers.redis_url))


def runner(servers: Servers, **kwargs: Any) -> Runner:
    return Runner(lambda: psycopg.connect(servers.database_url), context(servers), **kwargs)


def new_job(db: psycopg.Connection, project: Project, batch: int = 5) -> int:
    params = {"since": "2026-11-01T00:00:00+00:00", "until": "2026-12-01T00:00:00+00:00"}
    return jobs.create(db, "reprocess", project.id, {**params, "batch_size": batch}, "cli")


def store_calls(db: psycopg.Connection, project: Project, n: int) -> None:
    calls = [
        {
            "type": "track",
            "event": "E",
            "messageId": f"job-{next(_n)}",
            "anonymousId": f"v{i % 4}",
            "timestamp": f"2026-11-10T10:{i % 60:02d}:00Z",
            "receivedAt": "2026-11-23T12:00:00Z",
        }
        for i in range(n)
    ]
    with db.transaction():
        process(db, [queued(project.id, *calls, received_at="2026-11-23T12:00:00Z")], RULES)


def test_a_second_job_of_a_kind_and_project_is_refused_while_one_is_active(
    db: psycopg.Connection, project: Project
) -> None:
    first = new_job(db, project)
    with pytest.raises(jobs.JobConflict) as refused:
        new_job(db, project, batch=7)
    assert refused.value.active_id == first
    other = projects.create(db, f"p-{secrets.token_hex(4)}")
    assert new_job(db, other) != first  # another project's reprocessing may run meanwhile


def test_a_job_held_by_a_live_runner_is_not_run_twice(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    job_id = new_job(db, project)
    assert jobs.claim(db, job_id, "someone-alive", 120) is not None
    assert runner(servers).run(job_id) == "busy"


def test_a_dead_runners_job_is_taken_over_and_the_dead_runner_cannot_write(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    store_calls(db, project, 12)
    job_id = new_job(db, project)
    assert jobs.claim(db, job_id, "dead-runner", 120) is not None
    db.execute("UPDATE jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (job_id,))
    fenced: list[bool] = []

    def the_dead_runner_wakes_up(step: Step, total: int | None) -> None:
        if fenced:
            return
        # the job is running, held by the new runner: the old token writes nothing
        with psycopg.connect(servers.database_url, autocommit=True) as other:
            try:
                jobs.progress(other, job_id, "dead-runner", cursor=None, done=100, counts={})
            except jobs.TakenOver:
                fenced.append(True)
            else:
                fenced.append(False)

    assert runner(servers, on_step=the_dead_runner_wakes_up).run(job_id) == "done"
    assert fenced == [True]
    job = jobs.get(db, job_id)
    assert job is not None and (job["status"], job["done"]) == ("done", 12)


def test_resuming_while_another_run_of_the_project_is_active_is_a_conflict(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    first = new_job(db, project)
    assert jobs.claim(db, first, "r1", 120) is not None
    db.execute("UPDATE jobs SET status = 'interrupted' WHERE id = %s", (first,))
    second = new_job(db, project, batch=9)
    with pytest.raises(jobs.JobConflict):
        jobs.claim(db, first, "r2", 120)
    assert runner(servers).run(first) == "busy"
    jobs.cancel(db, second)
    assert runner(servers).run(first) == "done"


def test_cancel_stops_a_running_job_at_its_next_step(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    store_calls(db, project, 30)
    job_id = new_job(db, project)
    seen: list[int] = []

    def cancel_after_first(step: Step, total: int | None) -> None:
        seen.append(step.done)
        if len(seen) == 1:
            assert jobs.cancel(db, job_id) == "running"

    assert runner(servers, on_step=cancel_after_first).run(job_id) == "cancelled"
    job = jobs.get(db, job_id)
    assert job is not None
    assert (job["status"], job["done"], job["total"], seen) == ("cancelled", 10, 30, [5, 5])
    assert runner(servers).run(job_id) == "busy"  # a cancelled job does not start again


def test_cancel_of_a_queued_job_is_immediate(db: psycopg.Connection, project: Project) -> None:
    job_id = new_job(db, project)
    assert jobs.cancel(db, job_id) == "cancelled"
    assert jobs.cancel(db, 10**12) is None


def test_a_cancel_is_audited_under_the_jobs_project_for_an_operator_limited_to_it(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    from ingest.operations import audit as audit_ops
    from ingest.operations import jobs as job_ops
    from ingest.operations.actor import Actor
    from ingest.operations.context import Ops

    job_id = new_job(db, project)
    settings = Settings(database_url=servers.database_url, redis_url=servers.redis_url)
    limited = Ops(db, settings, Actor("token:mine", "operator", frozenset({project.id})))
    assert job_ops.cancel(limited, job_id).status == "cancelled"
    seen = audit_ops.list_entries(limited, 10, None, project.name, "job.cancel").items
    assert [(e.actor, e.project, e.selection["job_id"]) for e in seen] == [
        ("token:mine", project.name, job_id)
    ]


class Exploding:
    kind = "expire"

    def total(self, conn: psycopg.Connection) -> int | None:
        return 3

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step:
        conn.execute("SELECT 1 / 0")
        return Step(cursor)


def test_a_failing_step_fails_the_job_with_its_error_recorded(
    servers: Servers, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.jobs import kinds

    def exploding(row: dict[str, Any], ctx: Context) -> Job:
        return Exploding()

    monkeypatch.setattr(kinds, "build", exploding)
    job_id = jobs.create(db, "expire", None, {}, "cli")
    assert runner(servers).run(job_id) == "failed"
    job = jobs.get(db, job_id)
    assert job is not None and job["status"] == "failed"
    assert "DivisionByZero" in job["errors"][-1]["error"]
    assert jobs.active(db, "expire", None) is None  # a failed run does not block the next


def _api(rx_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.request(method, rx_url + path, headers=headers, timeout=10, **kwargs)


@pytest.mark.slow
def test_reprocess_started_by_the_api_runs_on_a_worker_in_slices_to_the_end(
    servers: Servers, db: psycopg.Connection, project: Project, tmp_path: Path
) -> None:
    store_calls(db, project, 60)
    rx = start_receiver(servers, tmp_path, ADMIN_TOKEN=TOKEN)
    worker = start_worker(servers, tmp_path, name="jobs", KOALA_JOB_SLICE_SECONDS="0.05")
    try:
        base = f"/admin/projects/{project.name}/reprocess"
        bad = _api(rx.url, "POST", base, json={"since": "2026-11-02"})
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")
        assert bad.json()["message"] == "until: Field required"
        backwards = _api(rx.url, "POST", base, json={"since": "2026-11-02", "until": "2026-11-01"})
        assert (backwards.status_code, backwards.json()["code"]) == (400, "invalid_range")
        started = _api(rx.url, "POST", base, json={"since": "2026-11-01", "until": "2026-12-01",
                                                   "batch_size": 2})  # fmt: skip
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        again = _api(rx.url, "POST", base, json={"since": "2026-11-01", "until": "2026-11-30"})
        assert (again.status_code, again.json()["code"]) == (409, "job_active")

        def finished() -> dict[str, Any] | None:
            job = _api(rx.url, "GET", f"/admin/jobs/{job_id}").json()
            return job if job["status"] in ("done", "failed", "cancelled") else None

        job = wait_for(finished, timeout=120, interval=0.5)
        assert isinstance(job, dict)
        assert (job["status"], job["done"], job["total"]) == ("done", 60, 60), job
        assert job["counts"]["reprocessed"] == 60 and job["trigger"] == "api"
        listed = _api(rx.url, "GET", "/admin/jobs?kind=reprocess&limit=1000").json()["items"]
        assert job_id in [j["id"] for j in listed]
        assert _api(rx.url, "GET", "/admin/jobs/999999999").status_code == 404
        assert _api(rx.url, "POST", f"/admin/jobs/{job_id}/cancel").json()["status"] == "done"
        slices = Counter(
            line.rsplit(": ", 1)[1]
            for line in worker.output().splitlines()
            if "koala.run_job" in line and "succeeded" in line
        )
        # 50 ms slices of 30 two-event batches: handed on at least once, finished once
        assert slices["'queued'"] >= 1 and slices["'done'"] == 1, worker.output()[-3000:]
        events = db.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events WHERE project_id = %s",
            (project.id,),
        ).fetchone()
        assert events == (60, 60)
    finally:
        worker.stop()
        rx.proc.stop()
