"""Real PostgreSQL and Redis for every test run, isolated per run.

Uses the servers named by DATABASE_URL / REDIS_URL when both are set, otherwise starts
embedded ones (the same real servers `koala-ingest up` uses). Each run gets its own
database and its own Redis key prefix, both removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from ingest import embedded
from ingest.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from ingest.message import QueuedRequest
from ingest.store import integrity, projects
from ingest.wire import Rejection

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Servers:
    server_url: str  # the PostgreSQL server (maintenance database)
    database_url: str  # this run's own database
    redis_url: str
    prefix: str  # this run's Redis key prefix
    embedded_redis: EmbeddedRedis | None
    embedded_postgres: EmbeddedPostgres | None

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            KOALA_REDIS_KEY_PREFIX=self.prefix,
            KOALA_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """The servers named by DATABASE_URL / REDIS_URL, else embedded ones; this run's own
    database and Redis key prefix, both removed at the end."""
    run_id = secrets.token_hex(4)
    base = Path(tempfile.mkdtemp(prefix="koala-test-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        found = embedded.servers(
            stack,
            base,
            f"koala_test_{run_id}",
            database_url=os.environ.get("DATABASE_URL"),
            redis_url=os.environ.get("REDIS_URL"),
        )
        run = Servers(
            server_url=found.server_url,
            database_url=found.database_url,
            redis_url=found.redis_url,
            prefix=f"koala-test-{run_id}:",
            embedded_redis=found.embedded_redis,
            embedded_postgres=found.embedded_postgres,
        )
        stack.callback(_forget_keys, run)
        os.environ.update(
            DATABASE_URL=run.database_url,
            REDIS_URL=run.redis_url,
            KOALA_REDIS_KEY_PREFIX=run.prefix,
        )
        yield run
        # the whole run's store, every test's writes: no row names a missing profile or
        # project (the hot tables have no foreign keys since migration 0018)
        with psycopg.connect(run.database_url, autocommit=True) as conn:
            migrated = conn.execute("SELECT to_regclass('engage_computations')").fetchone()
            left = integrity.orphans(conn) if migrated and migrated[0] else {}
        assert left == {}, f"rows naming a missing profile or project: {left}"


def _forget_keys(run: Servers) -> None:
    client = redis.Redis.from_url(run.redis_url)
    with contextlib.suppress(redis.RedisError):
        for key in client.scan_iter(match=run.prefix + "*", count=1000):
            client.delete(key)


@pytest.fixture
def db(servers: Servers) -> Iterator[psycopg.Connection]:
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def project(db: psycopg.Connection) -> projects.Project:
    return projects.create(db, f"p-{secrets.token_hex(4)}")


class Proc:
    """A koala-ingest child process (receiver or worker) whose output is kept in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def kill_pool(self) -> None:
        """SIGKILL the processes running the batches (Celery's pool), mid-batch.

        Not the consumer process itself: kombu's Redis transport moves a message from the
        queue to its `unacked` hash in two steps (BRPOP, then HSET), and a consumer killed
        between them loses that message. That window is a known limit of the transport,
        outside what koala-ingest can guard (see the session notes)."""
        import psutil

        for child in psutil.Process(self.process.pid).children(recursive=True):
            child.kill()


def koala(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingest", *args]


@dataclass
class Receiver:
    url: str
    proc: Proc


def start_receiver(servers: Servers, tmp: Path, **env: str) -> Receiver:
    port = free_port()
    proc = Proc(
        koala("web"),
        servers.env(PORT=str(port), KOALA_HOST="127.0.0.1", **env),
        tmp / f"web-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError("receiver exited:\n" + proc.output())
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return Receiver(url, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError("receiver did not become ready:\n" + proc.output())


def start_worker(
    servers: Servers, tmp: Path, name: str = "w1", concurrency: int = 2, **env: str
) -> Proc:
    return Proc(
        koala("worker", "--hostname", f"{name}@%h", "--concurrency", str(concurrency)),
        servers.env(**env),
        tmp / f"worker-{name}.log",
    )


@pytest.fixture(scope="module")
def receiver(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("receiver"))
    yield started
    started.proc.stop()


@pytest.fixture(scope="module")
def worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(servers, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


def received_now() -> str:
    """A `receivedAt` of now, for batches a real worker may retry.

    A batch received longer than `KOALA_RETRY_MAX_AGE_SECONDS` ago is dead-lettered at its
    first transient failure instead of retried: a fixed date in a test that retries is a
    time bomb (one went off on the day it was written).
    """
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def queued(
    project_id: int,
    *calls: dict[str, Any],
    source: str = "segment",
    received_at: str | None = None,
    shared: dict[str, Any] | None = None,
    rejected: Iterable[Rejection | dict[str, Any]] = (),
) -> QueuedRequest:
    """The message the receiver queues for these calls (ingest/message.py): the one way
    tests make one. `rejected` as Rejections or as their wire dicts."""
    return QueuedRequest(
        project_id=project_id,
        source=source,
        received_at=received_at or received_now(),
        calls=list(calls),
        rejected=[
            r
            if isinstance(r, Rejection)
            else Rejection(r.get("index"), r["code"], r["message"], r["payload"])
            for r in rejected
        ],
        shared=shared,
    )


def stored_per_message(db: psycopg.Connection, project_id: int) -> dict[str, int]:
    """How many events each messageId of a project has in the store (exactly once: 1)."""
    rows = db.execute(
        "SELECT message_id, count(*) FROM events WHERE project_id = %s GROUP BY message_id",
        (project_id,),
    ).fetchall()
    return {str(m): int(n) for m, n in rows}


def reconciled(stats: dict[str, Any]) -> bool:
    """The promise every test that sends calls checks: each call received is stored, a
    duplicate, rejected, dead-lettered or still in flight."""
    return bool(
        stats["received"]
        == stats["stored"]
        + stats["duplicates"]
        + stats["rejected"]
        + stats["dead_lettered"]
        + stats["in_flight"]
    )


def wait_for(predicate: object, timeout: float = 20.0, interval: float = 0.1) -> object:
    """Poll `predicate()` until it returns something truthy; fail with its last value."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"condition not met within {timeout}s (last value: {value!r})"
    return value
