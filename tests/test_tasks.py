"""The Celery side for real: parallel worker processes and a worker killed mid-load."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import Proc, Servers, queued, received_now, start_worker, wait_for

from ingest.queue import celery_message
from ingest.store import projects
from ingest.store.projects import Project

RECEIVED = received_now()  # batches here may be retried: see received_now


def push(servers: Servers, queue: str, messages: list[list[dict]]) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    pipe = client.pipeline()
    for message in messages:
        pipe.lpush(servers.prefix + queue, celery_message(queue, message))
    pipe.execute()


def req(project: Project, calls: list[dict]) -> dict:
    return queued(project.id, *calls, received_at=RECEIVED).to_wire()


def queue_empty(servers: Servers, queue: str) -> bool:
    client = redis.Redis.from_url(servers.redis_url)
    return client.llen(servers.prefix + queue) == 0


@pytest.mark.slow
def test_parallel_workers_resolving_one_new_visitor_end_with_one_profile(
    servers: Servers, db: psycopg.Connection, project: Project, tmp_path: Path
) -> None:
    queue = f"par-{secrets.token_hex(3)}"
    visitors, copies = 25, 8
    messages = []
    for v in range(visitors):  # a visitor's first calls side by side: taken at the same moment
        for copy in range(copies):
            call = {
                "type": "track",
                "event": "First",
                "messageId": f"v{v}-c{copy}",
                "anonymousId": f"anon-{v}",
                "properties": {"profile_id": f"ko-{v}"},
                "receivedAt": RECEIVED,
            }
            if copy == copies - 1:
                call["userId"] = f"user-{v}"
            messages.append([req(project, [call])])
    workers = [
        start_worker(servers, tmp_path, name=f"par{i}", concurrency=2, KOALA_QUEUE_NAME=queue)
        for i in range(2)
    ]
    try:
        time.sleep(3)  # both workers up and polling before the burst
        push(servers, queue, messages)

        def stored() -> int:
            row = db.execute("SELECT count(*) FROM events WHERE project_id = %s", (project.id,))
            return int(row.fetchone()[0]) == visitors * copies  # type: ignore[index]

        wait_for(stored, timeout=90)
        live = db.execute(
            "SELECT id, event_count FROM profiles WHERE project_id = %s AND merged_into IS NULL",
            (project.id,),
        ).fetchall()
        assert len(live) == visitors
        assert {count for _, count in live} == {copies}
        per_kind = db.execute(
            "SELECT kind, count(DISTINCT profile_id), count(*) FROM identities"
            " WHERE project_id = %s GROUP BY kind ORDER BY kind",
            (project.id,),
        ).fetchall()
        assert per_kind == [
            ("anonymous_id", visitors, visitors),
            ("profile_id", visitors, visitors),
            ("user_id", visitors, visitors),
        ]
        # both workers took part (the race was real)
        assert all("batch done" in w.output() for w in workers)
    finally:
        for w in workers:
            w.stop()


@pytest.mark.slow
def test_worker_killed_mid_load_loses_nothing_and_doubles_nothing(
    servers: Servers, db: psycopg.Connection, project: Project, tmp_path: Path
) -> None:
    queue = f"kill-{secrets.token_hex(3)}"
    n_messages, per_message = 150, 40
    messages = [
        [
            req(
                project,
                [
                    {
                        "type": "track",
                        "event": "E",
                        "messageId": f"k{m}-{i}",
                        "anonymousId": f"a{(m * per_message + i) % 300}",
                        "receivedAt": RECEIVED,
                    }
                    for i in range(per_message)
                ],
            )
        ]
        for m in range(n_messages)
    ]
    push(servers, queue, messages)
    env = {
        "KOALA_QUEUE_NAME": queue,
        "KOALA_VISIBILITY_TIMEOUT": "8",
        "KOALA_HEARTBEAT_SECONDS": "1",
        "KOALA_BREAKER_COOLDOWN_SECONDS": "4",
    }
    first: Proc = start_worker(servers, tmp_path, name="victim", concurrency=2, **env)

    def count() -> int:
        row = db.execute("SELECT count(*) FROM events WHERE project_id = %s", (project.id,))
        return int(row.fetchone()[0])  # type: ignore[index]

    wait_for(lambda: count() > per_message * 5, timeout=60, interval=0.05)
    first.kill_pool()  # SIGKILL the processes running the batches, mid-load
    at_kill = count()
    assert at_kill < n_messages * per_message, "the load finished before the kill"
    second = start_worker(servers, tmp_path, name="survivor", concurrency=2, **env)
    try:
        wait_for(
            lambda: count() == n_messages * per_message and queue_empty(servers, queue),
            timeout=120,
            interval=0.5,
        )
        time.sleep(10)  # past the visibility timeout: any redelivery has happened
        assert count() == n_messages * per_message
        distinct = db.execute(
            "SELECT count(DISTINCT message_id) FROM events WHERE project_id = %s", (project.id,)
        ).fetchone()
        assert distinct == (n_messages * per_message,)
        counters = db.execute(
            "SELECT stored FROM project_counters WHERE project_id = %s", (project.id,)
        ).fetchone()
        assert counters == (n_messages * per_message,)
        live = db.execute(
            "SELECT sum(event_count), count(*) FROM profiles WHERE project_id = %s"
            " AND merged_into IS NULL",
            (project.id,),
        ).fetchone()
        assert live == (n_messages * per_message, 300)
    finally:
        second.stop()
        first.stop()  # its consumer survived the pool kill


@pytest.mark.slow
def test_an_unforeseen_failure_keeps_the_batch_until_it_can_be_stored(
    servers: Servers, tmp_path: Path
) -> None:
    from ingest.embedded import drop_database, ensure_database
    from ingest.migrate import migrate

    name = f"koala_broken_{secrets.token_hex(3)}"
    url = ensure_database(servers.server_url, name)
    migrate(url)
    with psycopg.connect(url) as conn:
        project = projects.create(conn, "broken")
        conn.execute(
            "ALTER TABLE processed_batches RENAME TO processed_batches_gone"
        )  # a bad deploy
    queue = f"broken-{secrets.token_hex(3)}"
    worker = start_worker(
        servers,
        tmp_path,
        name="broken",
        DATABASE_URL=url,
        KOALA_QUEUE_NAME=queue,
        KOALA_RETRY_BACKOFF_MAX_SECONDS="1",
    )
    try:
        push(
            servers,
            queue,
            [
                [
                    req(
                        project,
                        [
                            {
                                "type": "track",
                                "event": "E",
                                "userId": "u",
                                "messageId": "kept-1",
                                "receivedAt": RECEIVED,
                            }
                        ],
                    )
                ]
            ],
        )
        wait_for(lambda: "failed unexpectedly" in worker.output(), timeout=30)
        time.sleep(2)
        with psycopg.connect(url) as conn:
            conn.execute("ALTER TABLE processed_batches_gone RENAME TO processed_batches")  # fixed

        def stored() -> bool:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM events").fetchone() == (1,)

        wait_for(stored, timeout=30)
    finally:
        worker.stop()
        drop_database(servers.server_url, name)
