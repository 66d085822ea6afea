"""The beat schedule (workers/schedule.py): entries from settings, and real beat processes
that never run a job twice in one period."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import Proc, Servers, koala, start_worker

from ingest.config import Settings
from workers import schedule


def test_every_scheduled_job_is_a_setting_and_zero_turns_it_off() -> None:
    settings = Settings(schedule_expire_seconds=0, schedule_auto_replay_seconds=60)
    entries = schedule.beat_schedule(settings)
    assert "expire" not in entries
    assert entries["auto_replay"]["schedule"] == 60.0
    assert entries["auto_replay"]["args"] == ("auto_replay",)
    assert {e.name for e in schedule.SCHEDULE} == {
        "auto_replay",
        "expire",
        "identity_check",
        "reprocess",
    }
    assert "reprocess" not in entries  # off unless asked for
    assert entries["resume-jobs"]["task"] == "koala.resume_jobs"


def test_a_period_is_the_same_for_every_run_inside_it() -> None:
    settings = Settings(schedule_identity_check_seconds=86_400)
    midnight = 1_795_392_000  # 2026-11-23T00:00:00Z
    assert schedule.period(settings, "identity_check", midnight) == schedule.period(
        settings, "identity_check", midnight + 86_399
    )
    assert schedule.period(settings, "identity_check", midnight + 86_400) == (
        schedule.period(settings, "identity_check", midnight) + 1
    )


def test_the_readme_documents_every_scheduled_job() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for entry in schedule.SCHEDULE:
        assert f"`{entry.name}`" in readme
        assert f"KOALA_{entry.schedule_setting.upper()}" in readme


def test_scheduled_reprocessing_starts_one_run_per_project_and_period(
    db: psycopg.Connection,
) -> None:
    from ingest.store import jobs, projects

    settings = Settings(schedule_reprocess_seconds=3600, reprocess_window_hours=6)
    mine = projects.create(db, f"sched-{secrets.token_hex(3)}")
    now = 1_795_400_000.0 + secrets.randbelow(10**6) * 3600  # a period no other test used
    first = schedule.start_runs(db, settings, "reprocess", now)
    runs = {j["project"]: j for j in (jobs.get(db, i) for i in first) if j is not None}
    assert mine.name in runs
    params = runs[mine.name]["params"]
    until = datetime.fromtimestamp(now // 3600 * 3600, UTC)
    assert (params["since"], params["until"]) == (
        (until - timedelta(hours=6)).isoformat(),
        until.isoformat(),
    )
    assert schedule.start_runs(db, settings, "reprocess", now + 60) == []  # same period
    # next period while this project's run is still queued: recorded as skipped
    later = schedule.start_runs(db, settings, "reprocess", now + 3600)
    assert all(jobs.get(db, i)["project"] != mine.name for i in later)  # type: ignore[index]
    skipped = db.execute(
        "SELECT status, params FROM jobs WHERE project_id = %s AND period = %s",
        (mine.id, int((now + 3600) // 3600)),
    ).fetchone()
    assert skipped == ("skipped", {"active_run": runs[mine.name]["id"]})
    for job_id in first + later:
        jobs.cancel(db, job_id)


@pytest.mark.slow
def test_two_beat_processes_run_each_scheduled_job_once_per_period(
    servers: Servers, db: psycopg.Connection, tmp_path: Path
) -> None:
    every = 3
    env = {
        "KOALA_SCHEDULE_AUTO_REPLAY_SECONDS": str(every),
        "KOALA_SCHEDULE_EXPIRE_SECONDS": str(every),
        "KOALA_SCHEDULE_IDENTITY_CHECK_SECONDS": str(every),
    }
    started = db.execute("SELECT now()").fetchone()
    assert started is not None
    worker = start_worker(servers, tmp_path, name="sched", **env)
    beats = [Proc(koala("beat"), servers.env(**env), tmp_path / f"beat{i}.log") for i in (1, 2)]
    began = time.monotonic()
    try:
        time.sleep(18)
    finally:
        for beat in beats:
            beat.stop()
        elapsed = time.monotonic() - began
        time.sleep(2)  # let the last sent runs finish
        worker.stop()
    rows = db.execute(
        "SELECT kind, period, status FROM jobs WHERE trigger = 'schedule' AND created_at >= %s",
        started,
    ).fetchall()
    periods: dict[str, list[int]] = defaultdict(list)
    for kind, period, status in rows:
        assert status in ("done", "skipped"), (kind, period, status)
        periods[kind].append(period)
    most = elapsed / every + 1
    for kind in ("auto_replay", "expire", "identity_check"):
        assert len(periods[kind]) == len(set(periods[kind])), periods[kind]
        assert 3 <= len(periods[kind]) <= most, (kind, periods[kind], elapsed)
    # celery-redbeat's lock: one beat sent the schedule, the other waited for the lock
    sent = [beat.output().count("Sending due task") for beat in beats]
    assert sorted(sent)[0] == 0 and sorted(sent)[1] >= 9, sent
