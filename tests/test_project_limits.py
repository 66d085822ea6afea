"""Per-project limits (ingest/limits.py): a project over its calls/s or queued-calls limit
is answered 429 + Retry-After while the others are answered 200 at the same moment; a 429
is not received (not counted), so reconciliation stays exact.

The receiver app runs in process against the real Redis and PostgreSQL (its accounting is
the flush script's), and the worker's batch code stores what it queued, in process."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from conftest import Servers, koala

from ingest.config import ConfigError, Settings, load
from ingest.identifiers import Rules
from ingest.limits import NO_LIMITS, Limits, Over, admitted, limits_for
from ingest.message import QueuedRequest
from ingest.operations.stats import counts
from ingest.queue import Ledger, enqueue_with_ledger
from ingest.receiver import create_app
from ingest.store import projects
from ingest.store.projects import Project
from workers import batch, recovery

# --- the pure rules ------------------------------------------------------------------


def test_a_project_over_its_limit_keeps_the_first_requests_that_fit() -> None:
    assert admitted([2, 2, 2], Over(1, "rate", left=5, fresh=False)) == 2
    assert admitted([6, 1], Over(1, "rate", left=5, fresh=False)) == 0
    # nothing counted yet: its first request is taken whatever its size
    assert admitted([6, 1], Over(1, "rate", left=5, fresh=True)) == 1
    # never all of them: the script found all of them over, so a retry makes progress
    assert admitted([1, 1], Over(1, "rate", left=5, fresh=False)) == 1


def test_a_projects_own_limits_override_the_settings() -> None:
    plain = projects.Project(1, "p", "pk", None)
    assert limits_for(plain, 100, 0) == Limits(100, 0)
    assert limits_for(plain, 0, 0) is NO_LIMITS
    own = projects.Project(1, "p", "pk", None, rate_limit=0, queue_limit=50)
    assert limits_for(own, 100, 1000) == Limits(0, 50)


def test_limit_settings_are_validated_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALA_PROJECT_RATE_LIMIT", "-1")
    with pytest.raises(ConfigError, match="KOALA_PROJECT_RATE_LIMIT"):
        load()
    monkeypatch.setenv("KOALA_PROJECT_RATE_LIMIT", "many")
    with pytest.raises(ConfigError, match="KOALA_PROJECT_RATE_LIMIT"):
        load()
    monkeypatch.setenv("KOALA_PROJECT_RATE_LIMIT", "500")
    monkeypatch.setenv("KOALA_PROJECT_QUEUE_LIMIT", "-5")
    with pytest.raises(ConfigError, match="KOALA_PROJECT_QUEUE_LIMIT"):
        load()
    monkeypatch.setenv("KOALA_PROJECT_QUEUE_LIMIT", "20000")
    settings = load()
    assert (settings.project_rate_limit, settings.project_queue_limit) == (500, 20000)


def test_the_columns_refuse_a_negative_limit(db: psycopg.Connection, project: Project) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE projects SET rate_limit = -1 WHERE id = %s", (project.id,))


# --- the receiver, in process -----------------------------------------------------------


def track(n: int) -> bytes:
    calls = [
        {"type": "track", "userId": "u-1", "event": "E", "messageId": secrets.token_hex(8)}
        for _ in range(n)
    ]
    return orjson.dumps({"batch": calls})


def auth(project: Project) -> dict[str, str]:
    return {
        "authorization": "Basic " + base64.b64encode(f"{project.public_key}:".encode()).decode()
    }


Send = Callable[[Project, int], Awaitable[httpx.Response]]


def run_receiver(
    servers: Servers, body: Callable[[Send, Settings], Awaitable[Any]], **limits: int
) -> Any:
    """Run `body(send, settings)` against an in-process receiver with its own queue."""
    settings = Settings(
        queue_name=f"limits-{secrets.token_hex(3)}",
        redis_key_prefix=servers.prefix,
        **limits,
    )
    app = create_app(settings)

    async def main() -> Any:
        async with app.app.router.lifespan_context(app.app):
            while not app.state.receiver.keys.loaded:
                await asyncio.sleep(0.02)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://rx") as client:

                async def send(project: Project, calls: int) -> httpx.Response:
                    return await client.post(
                        "/v1/import", content=track(calls), headers=auth(project)
                    )

                return await body(send, settings)

    return asyncio.run(main())


async def window_start() -> None:
    """Wait for the start of a second: the calls/s window is the clock's second."""
    await asyncio.sleep(1.02 - time.time() % 1)


def received(servers: Servers, project: Project) -> int:
    client = redis.Redis.from_url(servers.redis_url)
    try:
        return int(client.hget(servers.prefix + "received", str(project.id)) or 0)
    finally:
        client.close()


def drain(servers: Servers, db: psycopg.Connection, settings: Settings) -> int:
    """What a worker does with each queued batch: store it in its transaction, then settle
    its ledger entry. Returns the batches stored."""
    client = redis.Redis.from_url(servers.redis_url)
    done = 0
    try:
        while (raw := client.rpop(settings.queue_key)) is not None:
            envelope = orjson.loads(raw)
            wire = orjson.loads(base64.b64decode(envelope["body"]))[0][0]
            task_id = envelope["headers"]["id"]
            requests = [QueuedRequest.from_wire(r) for r in wire]
            batch.run(db, task_id, requests, Rules.of(settings), 60_000)
            recovery.settle(client, settings.redis_key_prefix, settings.queue_name, task_id)
            done += 1
    finally:
        client.close()
    return done


def assert_reconciled(
    db: psycopg.Connection, servers: Servers, project: Project, stored: int
) -> None:
    stats = counts(db, project, received(servers, project))
    assert (stats.received, stats.stored, stats.in_flight) == (stored, stored, 0)


def test_a_project_over_its_calls_per_second_gets_429_while_another_gets_200(
    servers: Servers, db: psycopg.Connection
) -> None:
    noisy = projects.create(db, f"noisy-{secrets.token_hex(3)}")
    steady = projects.create(db, f"steady-{secrets.token_hex(3)}")

    async def body(send: Send, settings: Settings) -> tuple[list[httpx.Response], ...]:
        await window_start()
        # one flush's worth, sent together: the noisy project's 3 x 5 calls against its
        # 5 calls/s, the steady project's 3 x 1
        loud = [send(noisy, n) for n in (5, 1, 1)]
        quiet = [send(steady, 1) for _ in range(3)]
        answers = await asyncio.gather(*loud, *quiet)
        return answers[:3], answers[3:], settings  # type: ignore[return-value]

    loud, quiet, settings = run_receiver(servers, body, project_rate_limit=5)
    assert [a.status_code for a in quiet] == [200, 200, 200]
    assert [a.status_code for a in loud] == [200, 429, 429]
    for refused in loud[1:]:
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "rate_limited"
        assert "5 calls per second" in refused.json()["message"]
    # a 429 is not received: the sender retries it
    assert received(servers, noisy) == 5
    assert received(servers, steady) == 3
    assert drain(servers, db, settings) >= 1
    assert_reconciled(db, servers, noisy, 5)
    assert_reconciled(db, servers, steady, 3)


def test_the_limit_holds_across_flushes_and_frees_up_in_the_next_second(
    servers: Servers, db: psycopg.Connection
) -> None:
    """Sent one after the other (a flush each): the batch that would pass the limit is
    refused whole, and from then on the receiver refuses the project's calls itself, without
    asking Redis, until the second ends (even a batch that would still fit); the next
    second takes them."""
    noisy = projects.create(db, f"noisy-{secrets.token_hex(3)}")

    async def body(send: Send, settings: Settings) -> tuple[list[int], Settings]:
        await window_start()
        statuses = [(await send(noisy, n)).status_code for n in (3, 3, 2)]
        await window_start()
        statuses.append((await send(noisy, 3)).status_code)
        return statuses, settings

    statuses, settings = run_receiver(servers, body, project_rate_limit=5)
    assert statuses == [200, 429, 429, 200]
    assert received(servers, noisy) == 6
    drain(servers, db, settings)
    assert_reconciled(db, servers, noisy, 6)


def test_a_project_with_too_many_calls_queued_gets_429_until_the_workers_catch_up(
    servers: Servers, db: psycopg.Connection
) -> None:
    noisy = projects.create(db, f"noisy-{secrets.token_hex(3)}")
    steady = projects.create(db, f"steady-{secrets.token_hex(3)}")
    # the steady project has a limit of its own: none
    db.execute("UPDATE projects SET queue_limit = 0 WHERE id = %s", (steady.id,))

    async def body(send: Send, settings: Settings) -> list[Any]:
        first = await send(noisy, 3)
        over = await send(noisy, 2)  # 3 + 2 queued > 4
        others = [await send(steady, 3) for _ in range(3)]  # 9 queued: no limit of its own
        stored = await asyncio.to_thread(drain, servers, db, settings)
        await asyncio.sleep(1.05)  # this receiver asks Redis again a second later
        after = await send(noisy, 3)
        return [first, over, others, stored, after, settings]

    first, over, others, stored, after, settings = run_receiver(
        servers, body, project_queue_limit=4
    )
    assert first.status_code == 200
    assert over.status_code == 429
    assert over.headers["retry-after"] == "1"
    assert over.json()["code"] == "rate_limited"
    assert "4 calls waiting" in over.json()["message"]
    assert [a.status_code for a in others] == [200, 200, 200]
    assert stored == 4
    assert after.status_code == 200  # the workers caught up: queued is 0 again
    client = redis.Redis.from_url(servers.redis_url)
    ledger = Ledger(servers.prefix, settings.queue_name)
    assert int(client.hget(ledger.queued, str(noisy.id)) or 0) == 3
    client.close()
    drain(servers, db, settings)
    assert_reconciled(db, servers, noisy, 6)
    assert_reconciled(db, servers, steady, 9)


def test_a_single_request_larger_than_the_limit_is_taken_when_nothing_is_counted(
    servers: Servers, db: psycopg.Connection
) -> None:
    """A backfill's 2,500-call batch must pass a 1,000 calls/s limit somehow: alone in its
    second it is taken, and the project is then over until the window ends."""
    noisy = projects.create(db, f"noisy-{secrets.token_hex(3)}")

    async def body(send: Send, settings: Settings) -> tuple[list[int], Settings]:
        await window_start()
        return [(await send(noisy, n)).status_code for n in (8, 1)], settings

    statuses, settings = run_receiver(servers, body, project_rate_limit=5)
    assert statuses == [200, 429]
    drain(servers, db, settings)
    assert_reconciled(db, servers, noisy, 8)


# --- the queued counters follow the ledger ----------------------------------------------


def test_settling_a_batch_twice_takes_its_calls_off_the_queued_count_once(
    servers: Servers,
) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    queue = f"settle-{secrets.token_hex(3)}"
    ledger = Ledger(servers.prefix, queue)
    client.hset(ledger.entries, mapping={"t-1": "m", "t-2": "m"})
    client.hset(ledger.calls, "t-1", "7 3 8 2")
    client.hset(ledger.queued, mapping={"7": 5, "8": 2})
    try:
        recovery.settle(client, servers.prefix, queue, "t-1")
        recovery.settle(client, servers.prefix, queue, "t-1")  # a redelivered batch
        assert client.hgetall(ledger.queued) == {b"7": b"2", b"8": b"0"}
        assert not client.hexists(ledger.calls, "t-1")
        # a replay's entry carries no project counts: nothing to take off
        enqueue_with_ledger(client, ledger, [("t-3", b"replay")])
        recovery.settle(client, servers.prefix, queue, "t-3")
        assert client.hgetall(ledger.queued) == {b"7": b"2", b"8": b"0"}
    finally:
        client.delete(ledger.queue_key, ledger.entries, ledger.since, ledger.calls, ledger.queued)
        client.close()


# --- a project's own limits ---------------------------------------------------------------


def test_an_operator_sets_and_resets_a_projects_own_limits(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = koala("projects", "set-limits", project.name, *args)
        return subprocess.run(argv, env=servers.env(), capture_output=True, text=True, timeout=60)

    def columns() -> tuple[int | None, int | None]:
        row = db.execute(
            "SELECT rate_limit, queue_limit FROM projects WHERE id = %s", (project.id,)
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    done = cli("--rate", "0", "--queued", "5000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{project.name}: rate none, queued 5000"
    assert columns() == (0, 5000)
    assert cli("--rate", "-3").returncode != 0
    assert columns() == (0, 5000)
    assert cli().returncode == 0  # both back to the deployment's settings
    assert columns() == (None, None)
    actions = db.execute(
        "SELECT action FROM audit_log WHERE project_id = %s ORDER BY id", (project.id,)
    ).fetchall()
    assert [a for (a,) in actions] == ["project.limits", "project.limits"]


def test_the_admin_api_sets_a_projects_limits_and_refuses_a_negative_one(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    from starlette.testclient import TestClient

    token = secrets.token_hex(8)
    settings = Settings(redis_key_prefix=servers.prefix, ADMIN_TOKEN=token)
    bearer = {"authorization": f"Bearer {token}"}
    url = f"/admin/projects/{project.name}/limits"
    with TestClient(create_app(settings).app) as client:
        done = client.put(url, json={"rate_limit": 300, "queue_limit": None}, headers=bearer)
        assert done.status_code == 200, done.text
        assert (done.json()["rate_limit"], done.json()["queue_limit"]) == (300, None)
        refused = client.put(url, json={"rate_limit": -1, "queue_limit": 0}, headers=bearer)
        assert refused.status_code == 400
        assert refused.json()["code"] == "invalid_request"
        unsigned = client.put(url, json={"rate_limit": 1, "queue_limit": None})
        assert unsigned.status_code == 401
    row = db.execute(
        "SELECT rate_limit, queue_limit FROM projects WHERE id = %s", (project.id,)
    ).fetchone()
    assert row == (300, None)


def test_a_project_without_limits_leaves_no_counts_and_costs_no_check(
    servers: Servers, db: psycopg.Connection
) -> None:
    """Its flushes take the light path (no limit keys): nothing in the ledger's project
    counts, no queued count; a project with a limit in the same deployment is counted."""
    free = projects.create(db, f"free-{secrets.token_hex(3)}")
    capped = projects.create(db, f"capped-{secrets.token_hex(3)}")
    db.execute("UPDATE projects SET queue_limit = 100 WHERE id = %s", (capped.id,))

    async def body(send: Send, settings: Settings) -> Settings:
        assert (await send(free, 2)).status_code == 200
        assert (await send(capped, 3)).status_code == 200
        return settings

    settings = run_receiver(servers, body)
    client = redis.Redis.from_url(servers.redis_url)
    ledger = Ledger(servers.prefix, settings.queue_name)
    try:
        assert client.hgetall(ledger.queued) == {str(capped.id).encode(): b"3"}
        assert list(client.hvals(ledger.calls)) == [f"{capped.id} 3".encode()]
        assert client.hlen(ledger.entries) == 2
    finally:
        client.close()
    drain(servers, db, settings)
    client = redis.Redis.from_url(servers.redis_url)
    assert client.hgetall(ledger.queued) == {str(capped.id).encode(): b"0"}
    client.close()
    assert_reconciled(db, servers, free, 2)
    assert_reconciled(db, servers, capped, 3)
