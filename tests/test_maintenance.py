"""The scheduled jobs (workers/jobs/maintenance.py) on real PostgreSQL and Redis: automatic
replay of transient dead letters, expiry and retention, the identity check."""

from __future__ import annotations

import itertools
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import redis
from conftest import Proc, Servers, koala, queued, wait_for

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.store import events, jobs
from ingest.store.projects import Project
from workers.failure.isolation import dead_letter_all
from workers.jobs import Context, kinds
from workers.jobs.runner import Runner
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
NOW = datetime.now(UTC)
_n = itertools.count()


def call(kind: str = "track", at: datetime = NOW, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "event": "E",
        "messageId": f"mt-{next(_n)}",
        "timestamp": at.isoformat(),
        "receivedAt": at.isoformat(),
        **fields,
    }


def request(project: Project, *calls: dict[str, Any]) -> QueuedRequest:
    return queued(project.id, *calls, received_at=NOW.isoformat())


def store(db: psycopg.Connection, project: Project, *calls: dict[str, Any]) -> None:
    with db.transaction():
        process(db, [request(project, *calls)], RULES)


def run(servers: Servers, db: psycopg.Connection, kind: str, **settings: Any) -> dict[str, Any]:
    configured = Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        redis_key_prefix=servers.prefix,
        **settings,
    )
    ctx = Context(configured, RULES, lambda: redis.Redis.from_url(servers.redis_url))
    job_id = jobs.create(db, kind, None, kinds.params_for(kind, db, configured), "cli")
    assert Runner(lambda: psycopg.connect(servers.database_url), ctx).run(job_id) == "done"
    job = jobs.get(db, job_id)
    assert job is not None
    return job


def letters(db: psycopg.Connection, project: Project) -> dict[str, tuple[str, str]]:
    rows = db.execute(
        "SELECT message_id, reason, status FROM dead_letters WHERE project_id = %s",
        (project.id,),
    ).fetchall()
    return {m: (r, s) for m, r, s in rows}


def stored(db: psycopg.Connection, project: Project) -> set[str]:
    rows = db.execute("SELECT message_id FROM events WHERE project_id = %s", (project.id,))
    return {r[0] for r in rows.fetchall()}


def test_auto_replay_stores_transient_failures_and_leaves_permanent_ones(
    servers: Servers, db: psycopg.Connection, project: Project, worker: Proc
) -> None:
    transient = [call(anonymousId="t1"), call(anonymousId="t2")]
    too_old = call(anonymousId="t3")
    # What the worker writes when the store kept failing for the whole retry window:
    with db.transaction():
        dead_letter_all(db, [request(project, *transient, too_old)], "transient_exhausted",
                        psycopg.OperationalError("server closed the connection"))  # fmt: skip
    db.execute(
        "UPDATE dead_letters SET first_failed_at = now() - interval '5 days' WHERE message_id = %s",
        (too_old["messageId"],),
    )
    # ... and when a call can never be normalized (a permanent failure):
    permanent = call(timestamp="9999-12-31T23:59:59Z", sentAt="0001-01-01T00:00:00Z")
    store(db, project, permanent)
    assert letters(db, project)[permanent["messageId"]][1] == "pending"

    done = subprocess.run(
        koala("jobs", "run", "auto_replay"),
        env=servers.env(KOALA_AUTO_REPLAY_MAX_AGE_HOURS="72"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert re.search(r"replayed ([2-9]|\d\d+)\b", done.stdout), done.stdout  # ours, maybe more

    wanted = {c["messageId"] for c in transient}
    wait_for(lambda: wanted <= stored(db, project), timeout=30)
    after = letters(db, project)
    assert {m for m, (_, status) in after.items() if status == "replayed"} == wanted
    assert after[too_old["messageId"]] == ("transient_exhausted", "pending")
    assert after[permanent["messageId"]][1] == "pending"
    assert permanent["messageId"] not in stored(db, project)
    # a second run finds nothing more to replay
    again = subprocess.run(koala("jobs", "run", "auto_replay"), env=servers.env(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and re.search(r"replayed 0\b", again.stdout), again.stdout


def test_auto_replay_sends_no_more_than_its_budget(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    with db.transaction():
        dead_letter_all(db, [request(project, call(), call(), call())], "transient_exhausted",
                        psycopg.OperationalError("gone"))  # fmt: skip
    # other tests' letters may be pending too: the budget bounds the whole run
    job = run(servers, db, "auto_replay", auto_replay_budget=2)
    assert (job["done"], job["counts"]["replayed"]) == (2, 2)


def test_expiry_forgets_old_dedup_keys_and_retention_deletes_old_data_only(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    old_call, recent_call = call(at=old, anonymousId="o"), call(at=recent, anonymousId="r")
    store(db, project, old_call, recent_call)
    db.execute(
        "UPDATE message_ids SET first_seen = now() - interval '8 days'"
        " WHERE project_id = %s AND message_id = %s",
        (project.id, old_call["messageId"]),
    )
    with db.transaction():
        dead_letter_all(db, [request(project, call(), call())], "transient_exhausted",
                        psycopg.OperationalError("gone"))  # fmt: skip
    db.execute(
        "UPDATE dead_letters SET last_failed_at = now() - interval '40 days',"
        " status = CASE WHEN id = (SELECT min(id) FROM dead_letters WHERE project_id = %s)"
        " THEN 'discarded' ELSE status END WHERE project_id = %s",
        (project.id, project.id),
    )

    job = run(servers, db, "expire", retention_days=30, dedup_window_days=7)

    assert job["counts"]["dedup_keys"] >= 1 and job["counts"]["events"] >= 1
    keys = db.execute("SELECT message_id FROM message_ids WHERE project_id = %s", (project.id,))
    assert {r[0] for r in keys.fetchall()} == {recent_call["messageId"]}
    assert stored(db, project) == {recent_call["messageId"]}
    statuses = sorted(s for _, s in letters(db, project).values())
    assert statuses == ["pending"]  # the resolved old letter went, the pending one stays
    # company activity (migration 0012): the old day's counts went with its events
    assert job["counts"]["activity"] >= 1
    days = db.execute("SELECT DISTINCT day FROM profile_activity WHERE project_id = %s",
                      (project.id,)).fetchall()  # fmt: skip
    assert days == [(recent.astimezone(UTC).date(),)]


def _split(db: psycopg.Connection, project: Project, identifier: str, to_profile: int) -> None:
    """What a race between two batches would leave: an identifier an event of one profile
    carries, held by another profile."""
    db.execute(
        "UPDATE identities SET profile_id = %s WHERE project_id = %s AND value = %s",
        (to_profile, project.id, identifier),
    )


def _profile_of(db: psycopg.Connection, project: Project, value: str) -> int:
    row = db.execute(
        "SELECT profile_id FROM identities WHERE project_id = %s AND value = %s",
        (project.id, value),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_identity_check_merges_profiles_that_share_an_identifier(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    store(db, project, call(anonymousId="race-a1"))
    store(db, project, call(userId="race-u1", anonymousId="race-a2"))
    a, b = _profile_of(db, project, "race-a1"), _profile_of(db, project, "race-u1")
    assert a != b
    _split(db, project, "race-a2", a)  # b's event says race-a2, a holds it

    job = run(servers, db, "identity_check")

    assert job["counts"]["merges"] >= 1
    survivor = _profile_of(db, project, "race-u1")
    assert {_profile_of(db, project, v) for v in ("race-a1", "race-a2")} == {survivor}
    counts = db.execute(
        "SELECT p.event_count, (SELECT count(*) FROM events e WHERE e.profile_id = p.id)"
        " FROM profiles p WHERE p.id = %s",
        (survivor,),
    ).fetchone()
    assert counts == (2, 2)
    logged = db.execute(
        "SELECT count(*) FROM profile_merges WHERE project_id = %s AND NOT refused",
        (project.id,),
    ).fetchone()
    assert logged == (1,)


def test_identity_check_keeps_two_emails_apart_and_does_not_retry_the_refusal(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    store(db, project, call("identify", anonymousId="race-b1", traits={"email": "x@acme.com"}))
    store(db, project, call("identify", anonymousId="race-b2", traits={"email": "y@acme.com"}))
    x = _profile_of(db, project, "x@acme.com")
    _split(db, project, "race-b2", x)

    run(servers, db, "identity_check")

    assert _profile_of(db, project, "x@acme.com") != _profile_of(db, project, "y@acme.com")
    refused = db.execute(
        "SELECT count(*) FROM profile_merges WHERE project_id = %s AND refused", (project.id,)
    ).fetchone()
    assert refused == (1,)
    ours = db.execute(
        "SELECT min(id), max(id) FROM events WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert ours is not None
    found = events.split_identities(db, ours[0] - 1, ours[1], 1000)
    assert not [f for f in found if f["project_id"] == project.id]  # refused: not a candidate
    run(servers, db, "identity_check")
    assert db.execute(
        "SELECT count(*) FROM profile_merges WHERE project_id = %s AND refused", (project.id,)
    ).fetchone() == (1,)


def test_a_replay_lost_by_a_killed_consumer_is_queued_again_and_resolves_its_letter(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    """Replays are written with their ledger entry, like the receiver's batches: a consumer
    killed between kombu's BRPOP and HSET loses nothing (workers/recovery.py)."""
    from ingest.queue import Ledger
    from ingest.replay import replay
    from ingest.store.dead_letters import Filter
    from workers.recovery import recover

    queue = f"replay-{next(_n)}"
    prefix = f"{servers.prefix}{queue}:"
    settings = Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        redis_key_prefix=prefix,
        queue_name=queue,
    )
    with db.transaction():
        dead_letter_all(db, [request(project, call(anonymousId="rl"))], "transient_exhausted",
                        psycopg.OperationalError("gone"))  # fmt: skip
    client = redis.Redis.from_url(servers.redis_url)
    done = replay(db, client, settings, Filter(project_id=project.id), limit=10)
    assert done.replayed == 1
    ledger = Ledger(prefix, queue)
    [task_id] = client.hkeys(ledger.entries)
    lost = client.rpop(ledger.queue_key)  # a consumer's BRPOP, then it died
    assert lost is not None
    decision = recover(client, db, prefix, queue, lost_after=0)
    assert decision.requeue == [task_id.decode()]
    assert client.lindex(ledger.queue_key, -1) == lost
    client.delete(ledger.queue_key, ledger.entries, ledger.since)


def test_a_letter_stuck_in_replaying_is_pending_again_after_the_stated_time(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    with db.transaction():
        dead_letter_all(db, [request(project, call(), call())], "transient_exhausted",
                        psycopg.OperationalError("gone"))  # fmt: skip
    db.execute(
        "UPDATE dead_letters SET status = 'replaying', updated_at = now() - interval '2 hours'"
        " WHERE id = (SELECT min(id) FROM dead_letters WHERE project_id = %s)",
        (project.id,),
    )
    db.execute(
        "UPDATE dead_letters SET status = 'replaying', updated_at = now()"
        " WHERE id = (SELECT max(id) FROM dead_letters WHERE project_id = %s)",
        (project.id,),
    )
    job = run(servers, db, "expire", replay_stuck_seconds=3600)
    assert job["counts"]["stuck_replays"] >= 1
    assert sorted(s for _, s in letters(db, project).values()) == ["pending", "replaying"]
    # an operator sees the other with `dlq list --status replaying` and resets it at once
    [(letter_id,)] = db.execute(
        "SELECT id FROM dead_letters WHERE project_id = %s AND status = 'replaying'",
        (project.id,),
    ).fetchall()
    listed = subprocess.run(
        koala("dlq", "list", "--project", project.name, "--status", "replaying"),
        env=servers.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and str(letter_id) in listed.stdout, listed.stdout
    reset = subprocess.run(koala("dlq", "reset", str(letter_id)), env=servers.env(),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert reset.returncode == 0 and "reset 1 to pending" in reset.stdout, reset.stderr
    assert sorted(s for _, s in letters(db, project).values()) == ["pending", "pending"]


def test_a_replay_run_never_sends_one_letter_twice_even_if_it_fails_again_meanwhile(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    """A worker quicker than the replay loop puts a failed replay back to `pending` before
    the loop's next claim: the run must not take it again (it did: `replayed: 2`)."""
    from ingest.replay import replay
    from ingest.store.dead_letters import Filter

    with db.transaction():
        dead_letter_all(db, [request(project, call(anonymousId="twice"))],
                        "transient_exhausted", psycopg.OperationalError("gone"))  # fmt: skip
    queue = f"twice-{next(_n)}"
    settings = Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        redis_key_prefix=f"{servers.prefix}{queue}:",
        queue_name=queue,
    )

    def failed_again_at_once(_: int) -> None:
        db.execute(
            "UPDATE dead_letters SET status = 'pending' WHERE project_id = %s", (project.id,)
        )

    client = redis.Redis.from_url(servers.redis_url)
    done = replay(
        db, client, settings, Filter(project_id=project.id), progress=failed_again_at_once
    )
    assert done.replayed == 1
    for key in client.scan_iter(match=settings.redis_key_prefix + "*"):
        client.delete(key)
