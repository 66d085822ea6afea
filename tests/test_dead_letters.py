"""Failures for real: a poison call in a batch, replay (twice), and PostgreSQL stopped for
30 s under load, with reconciliation checked through every step."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from conftest import (
    Proc,
    Receiver,
    Servers,
    koala,
    queued,
    received_now,
    reconciled,
    start_receiver,
    start_worker,
    wait_for,
)

from ingest.embedded import EmbeddedPostgres, ensure_database
from ingest.migrate import migrate
from ingest.operations.stats import received_key
from ingest.queue import celery_message
from ingest.store import projects
from ingest.store.projects import Project

TOKEN = "dlq-token"


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("dlq"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


@pytest.fixture(scope="module")
def dlq_worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(servers, tmp_path_factory.mktemp("dlq-worker"), name="dlq")
    yield proc
    proc.stop()


def admin(rx: Receiver, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method, rx.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs
    )
    assert response.status_code == 200, response.text
    return response.json()


def send(rx: Receiver, project: Project, batch: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(rx.url + "/v1/batch", json={"batch": batch}, auth=(project.public_key, ""))


def queue_past_the_receiver(
    project: Project, calls: list[dict[str, Any]], prefix: str | None = None
) -> None:
    """Queue calls as a receiver of an earlier version did: the receiver now refuses a
    NUL or a timestamp the skew rule throws out of the calendar (issue #13), but such calls
    still reach the workers from older queues and as replays of old dead letters, and the
    workers' isolation of them is what these tests prove. Counted as received, like the
    receiver's own queueing does."""
    prefix = prefix if prefix is not None else os.environ["KOALA_REDIS_KEY_PREFIX"]
    now = received_now()
    request = {
        "project_id": project.id,
        "source": "segment",
        "received_at": now,
        "shared": None,
        "calls": [{**call, "receivedAt": now} for call in calls],
        "rejected": [],
    }
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.hincrby(received_key(prefix), str(project.id), len(calls))
    client.lpush(prefix + "ingest", celery_message("ingest", [request]))
    client.close()


def stats(rx: Receiver, project: Project) -> dict[str, Any]:
    return admin(rx, "GET", f"/admin/projects/{project.name}/stats")  # type: ignore[no-any-return]


balanced = reconciled


def nul_call(message_id: str) -> dict[str, Any]:
    """A call PostgreSQL cannot store as sent: jsonb refuses U+0000."""
    return {
        "type": "track",
        "event": "B",
        "userId": "u",
        "messageId": message_id,
        "properties": {"x": "\u0000"},
    }


def settled(rx: Receiver, project: Project, received: int) -> Any:
    def done() -> dict[str, Any] | None:
        s = stats(rx, project)
        return s if s["in_flight"] == 0 and s["received"] == received else None

    return wait_for(done, timeout=60, interval=0.2)


def test_poison_call_is_isolated_then_fixed_and_replayed_once(
    rx: Receiver, dlq_worker: Proc, project: Project, db: psycopg.Connection
) -> None:
    good = [
        {"type": "track", "event": "Ok", "userId": f"u{i}", "messageId": f"ok-{i}"}
        for i in range(20)
    ]
    # PostgreSQL's jsonb cannot hold U+0000: this call can never be stored as sent
    poison = {
        "type": "track",
        "event": "Bad",
        "userId": "u-bad",
        "messageId": "poison-1",
        "properties": {"note": "nul\u0000byte"},
    }
    queue_past_the_receiver(project, [*good[:10], poison, *good[10:]])
    s = settled(rx, project, 21)
    assert (s["stored"], s["dead_lettered"]) == (20, 1) and balanced(s)

    base = f"/admin/projects/{project.name}/dead-letters"
    listed = admin(rx, "GET", base)
    [letter] = listed["items"]
    assert letter["message_id"] == "poison-1" and letter["stage"] == "store"
    assert (
        letter["payload"]["event"] == "Bad" and "\\u0000" in letter["payload"]["properties"]["note"]
    )
    assert listed["counts"] == [{"reason": letter["reason"], "stage": "store", "count": 1}]
    shown = admin(rx, "GET", f"{base}/{letter['id']}")
    assert "Traceback" in shown["traceback"]

    dry = admin(rx, "POST", base + "/replay", json={"ids": [letter["id"]], "dry_run": True})
    assert (dry["matched"], dry["replayed"]) == (1, 0)
    fixed = dict(poison, properties={"note": "fixed"})
    done = admin(rx, "POST", base + "/replay", json={"ids": [letter["id"]], "payload": fixed})
    assert (done["matched"], done["replayed"]) == (1, 1)

    def resolved() -> dict[str, Any] | None:
        s = stats(rx, project)
        return s if s["dead_lettered"] == 0 else None

    s = wait_for(resolved, timeout=30)
    assert s["stored"] == 21 and s["in_flight"] == 0 and balanced(s)
    again = admin(rx, "POST", base + "/replay", json={"ids": [letter["id"]]})
    assert again == {"matched": 0, "replayed": 0, "dry_run": False, "preview": [], "last_id": None}
    rows = db.execute(
        "SELECT count(*) FROM events WHERE project_id = %s AND message_id = %s",
        (project.id, "poison-1"),
    ).fetchone()
    assert rows == (1,)
    status = admin(rx, "GET", base, params={"status": "replayed"})["items"]
    assert [d["id"] for d in status] == [letter["id"]]


def test_replaying_a_letter_that_fails_again_raises_its_attempts(
    rx: Receiver, dlq_worker: Proc, project: Project
) -> None:
    poison = {
        "type": "track",
        "event": "Bad",
        "userId": "u",
        "messageId": "p-2",
        # a client clock gone wild: the skew correction lands before year 1
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T00:00:00Z",
    }
    queue_past_the_receiver(project, [poison])
    settled(rx, project, 1)
    base = f"/admin/projects/{project.name}/dead-letters"
    [letter] = admin(rx, "GET", base)["items"]
    for attempt in (2, 3):
        assert (
            admin(rx, "POST", base + "/replay", json={"reason": letter["reason"]})["replayed"] == 1
        )

        def back(attempt: int = attempt) -> Any:
            found = admin(rx, "GET", base)["items"]
            return found if found and found[0]["attempts"] == attempt else None

        [again] = wait_for(back, timeout=30)
        assert again["id"] == letter["id"] and again["status"] == "pending"
    assert again["reason"] == "invalid_timestamp" and again["stage"] == "normalize"
    s = stats(rx, project)
    assert s["dead_lettered"] == 1 and balanced(s)


def test_discarded_letters_stay_visible(rx: Receiver, dlq_worker: Proc, project: Project) -> None:
    queue_past_the_receiver(project, [nul_call("p-3")])
    settled(rx, project, 1)
    base = f"/admin/projects/{project.name}/dead-letters"
    [letter] = admin(rx, "GET", base)["items"]
    assert admin(rx, "DELETE", f"{base}/{letter['id']}") == {"count": 1}
    assert admin(rx, "GET", base)["items"] == []
    [kept] = admin(rx, "GET", base, params={"status": "discarded"})["items"]
    assert kept["id"] == letter["id"]
    assert (
        httpx.delete(
            rx.url + f"{base}/{letter['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
        ).status_code
        == 404
    )


def test_dlq_cli_lists_shows_and_replays_with_dry_run(
    servers: Servers, rx: Receiver, dlq_worker: Proc, project: Project
) -> None:
    queue_past_the_receiver(project, [nul_call("p-4")])
    settled(rx, project, 1)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            koala(*args), env=servers.env(), capture_output=True, text=True, timeout=60
        )

    listed = cli("dlq", "list", "--project", project.name, "--json")
    assert listed.returncode == 0, listed.stderr
    import json

    [letter] = json.loads(listed.stdout)["items"]
    assert '"message_id": "p-4"' in cli("dlq", "show", str(letter["id"])).stdout
    dry = cli("dlq", "replay", "--project", project.name, "--all", "--dry-run")
    assert "matched 1; dry run" in dry.stdout
    replayed = cli("dlq", "replay", str(letter["id"]), "--rate", "50")
    assert "replayed 1" in replayed.stdout


@pytest.mark.slow
def test_postgresql_stopped_30s_under_load_stores_everything_once(
    servers: Servers, tmp_path: Path
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg")
    url = ensure_database(pg.start(), "outage")
    migrate(url)
    with psycopg.connect(url) as conn:
        project = projects.create(conn, "outage")
    queue = f"outage-{secrets.token_hex(3)}"
    client = redis.Redis.from_url(servers.redis_url)
    worker = start_worker(
        servers,
        tmp_path,
        name="outage",
        DATABASE_URL=url,
        KOALA_QUEUE_NAME=queue,
        KOALA_RETRY_BACKOFF_MAX_SECONDS="8",
    )
    sent = 0

    def push(n: int) -> None:
        nonlocal sent
        now = received_now()  # retried while PostgreSQL is down: see received_now
        calls = [
            {
                "type": "track",
                "event": "E",
                "anonymousId": f"a{(sent + i) % 40}",
                "messageId": f"o-{sent + i}",
                "receivedAt": now,
            }
            for i in range(n)
        ]
        request = queued(project.id, *calls, received_at=now).to_wire()
        client.lpush(servers.prefix + queue, celery_message(queue, [request]))
        sent += n

    def count() -> int:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM events")
                total, distinct = row.fetchone()  # type: ignore[misc]
                assert total == distinct
                return int(total)
        except psycopg.OperationalError:
            return -1

    def dead_letters() -> int:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
                return int(row[0])  # type: ignore[index]
        except psycopg.OperationalError:
            return -1

    try:
        for _ in range(20):
            push(25)
        wait_for(lambda: count() > 0, timeout=30)
        pg.stop()
        stop_at = time.monotonic()
        feeder = threading.Thread(target=lambda: [push(25) or time.sleep(0.5) for _ in range(20)])
        feeder.start()
        time.sleep(max(0.0, 30 - (time.monotonic() - stop_at)))
        feeder.join()
        pg.restart()
        # settled: every call stored or dead-lettered; then the asserts say which
        wait_for(lambda: count() + dead_letters() == sent, timeout=120, interval=0.5)
        with psycopg.connect(url) as conn:
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            counters = conn.execute(
                "SELECT stored, duplicates, dead_lettered FROM project_counters"
            ).fetchone()
        assert dead == (0,)
        assert counters == (sent, 0, 0)
        assert "retry" in worker.output()
    finally:
        worker.stop()
        pg.stop()
        client.delete(servers.prefix + queue)


@pytest.mark.slow
def test_circuit_breaker_trips_holds_work_and_recovers(
    servers: Servers, project: Project, tmp_path: Path, db: psycopg.Connection
) -> None:
    prefix = f"breaker-{secrets.token_hex(3)}:"
    env = {
        "KOALA_REDIS_KEY_PREFIX": prefix,
        "KOALA_BREAKER_MIN_CALLS": "20",
        "KOALA_BREAKER_COOLDOWN_SECONDS": "12",
        "KOALA_VISIBILITY_TIMEOUT": "30",
    }
    rx = start_receiver(servers, tmp_path, ADMIN_TOKEN=TOKEN, **env)
    worker = start_worker(servers, tmp_path, name="breaker", **env)
    bad = {
        "type": "track",
        "event": "B",
        "userId": "u",
        "timestamp": "0001-01-01T00:00:00Z",
        "sentAt": "9999-12-31T00:00:00Z",
    }
    try:
        # a bad deploy: every call fails to normalize
        queue_past_the_receiver(
            project, [dict(bad, messageId=f"bad-{i}") for i in range(30)], prefix
        )
        wait_for(lambda: "circuit breaker open" in httpx.get(rx.url + "/readyz").text, timeout=30)
        assert httpx.get(rx.url + "/readyz").status_code == 200  # calls still queue safely
        assert "circuit breaker OPENED" in worker.output()
        assert "koala_breaker_open 1.0" in httpx.get(rx.url + "/metrics").text
        # while open, work is held (not dead-lettered, not lost)
        send(rx, project, [{"type": "track", "event": "Ok", "userId": "u", "messageId": "ok-b"}])
        time.sleep(3)
        assert stats(rx, project)["in_flight"] == 1
        wait_for(lambda: "holding batch" in worker.output(), timeout=10)
        # after the cooldown the workers try again and the good call is stored
        s = settled(rx, project, 31)
        assert (s["stored"], s["dead_lettered"]) == (1, 30) and balanced(s)
        wait_for(lambda: not httpx.get(rx.url + "/readyz").json()["warnings"], timeout=30)
        text = httpx.get(rx.url + "/metrics").text
        assert 'koala_dead_letters_total{reason="invalid_timestamp"} 30.0' in text
        status = subprocess.run(
            koala("breaker", "status"),
            env=servers.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.stdout.strip() == "closed"
    finally:
        worker.stop()
        rx.proc.stop()
        client = redis.Redis.from_url(servers.redis_url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)


@pytest.mark.slow
def test_transient_failures_that_outlast_the_retries_become_dead_letters_and_replay(
    servers: Servers, project: Project, tmp_path: Path
) -> None:
    queue = {"KOALA_QUEUE_NAME": f"exhaust-{secrets.token_hex(3)}"}  # no other worker on it
    rx = start_receiver(servers, tmp_path, ADMIN_TOKEN=TOKEN, **queue)
    # A lock nobody releases: every attempt's statement times out (a transient error).
    blocker = psycopg.connect(servers.database_url)
    blocker.execute("LOCK TABLE message_ids IN ACCESS EXCLUSIVE MODE")
    worker = start_worker(
        servers,
        tmp_path,
        name="exhaust",
        KOALA_STATEMENT_TIMEOUT_MS="300",
        KOALA_RETRY_MAX_ATTEMPTS="2",
        KOALA_RETRY_BACKOFF_MAX_SECONDS="1",
        **queue,
    )
    try:
        calls = [
            {"type": "track", "event": "E", "userId": "u", "messageId": f"t-{i}"} for i in range(5)
        ]
        assert send(rx, project, calls).status_code == 200
        s = settled(rx, project, 5)
        assert (s["stored"], s["dead_lettered"]) == (0, 5) and balanced(s)
        base = f"/admin/projects/{project.name}/dead-letters"
        listed = admin(rx, "GET", base)
        assert {c["reason"]: c["count"] for c in listed["counts"]} == {"transient_exhausted": 5}
        assert worker.output().count("retry") >= 2
        blocker.rollback()  # the cause is gone
        assert (
            admin(rx, "POST", base + "/replay", json={"reason": "transient_exhausted"})["replayed"]
            == 5
        )
        s = wait_for(lambda: (x := stats(rx, project))["dead_lettered"] == 0 and x, timeout=30)
        assert s["stored"] == 5 and s["in_flight"] == 0 and balanced(s)
    finally:
        blocker.close()
        worker.stop()
        rx.proc.stop()


def test_letters_stuck_in_replaying_are_reset_over_the_admin_api(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    from workers.failure.isolation import dead_letter_all

    calls = [{"type": "track", "event": "E", "anonymousId": "st", "messageId": f"stuck-{i}"}
             for i in range(2)]  # fmt: skip
    request = queued(project.id, *calls, received_at="2026-11-01T00:00:00Z")
    with db.transaction():
        dead_letter_all(db, [request], "transient_exhausted", psycopg.OperationalError("x"))
    ids = [r[0] for r in db.execute(
        "UPDATE dead_letters SET status = 'replaying' WHERE project_id = %s RETURNING id",
        (project.id,),
    ).fetchall()]  # fmt: skip
    base = f"/admin/projects/{project.name}/dead-letters"
    bad = httpx.post(
        rx.url + base + "/reset", json={"ids": ["x"]}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")
    assert bad.json()["message"].startswith("ids.0: ")
    assert admin(rx, "POST", base + "/reset", json={"ids": [ids[0]]}) == {"count": 1}
    listed = admin(rx, "GET", base, params={"status": "replaying"})["items"]
    assert [d["id"] for d in listed] == [ids[1]]
