"""Deploy files reference real commands and real settings."""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import psycopg
import pytest
import redis
import yaml
from conftest import (
    ROOT,
    Proc,
    Servers,
    koala,
    queued,
    received_now,
    start_receiver,
    start_worker,
    wait_for,
)
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ingest.commands import processes as cli
from ingest.config import ConfigError, Settings, load
from ingest.embedded import free_port
from ingest.queue import celery_message
from ingest.store.projects import Project

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))


def _variables() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias.choices[0] if alias is not None else f"KOALA_{name.upper()}")  # type: ignore[union-attr]
    return names


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_runs_a_real_koala_ingest_command(unit: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(unit)
    exec_start = parser["Service"]["ExecStart"].split()
    assert exec_start[0].endswith("/koala-ingest")
    role = exec_start[1]
    assert unit.name == f"koala-ingest-{role}.service"
    done = subprocess.run(koala(role, "--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert parser["Service"]["Restart"] == "always"
    assert parser["Service"]["KillSignal"] == "SIGTERM"
    if role == "worker":  # a held batch and its statements finish before SIGKILL
        defaults = Settings()
        needed = defaults.breaker_cooldown_seconds + defaults.statement_timeout_ms / 1000
        assert int(parser["Service"]["TimeoutStopSec"]) > needed


def test_env_example_names_only_known_variables() -> None:
    text = (ROOT / "deploy" / "systemd" / "env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    assert names and names <= _variables()


def test_procfile_runs_real_commands_and_web_binds_port() -> None:
    entries = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )
    assert {"web", "worker", "beat"} <= set(entries)
    for command in entries.values():
        program, role = command.split()[:2]
        assert program == "koala-ingest"
        assert (
            subprocess.run(koala(role, "--help"), capture_output=True, timeout=60).returncode == 0
        )


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [v for v in _variables() if f"`{v}`" not in readme]
    assert not missing


# --- deploy/redis/redis.conf: a real redis-server started with the file ------------------

REDIS_CONF = ROOT / "deploy" / "redis" / "redis.conf"


def _redis_server_binary() -> str:
    """A Redis >= 7 server (the file uses 7.0 directives such as `appenddirname`)."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    except OSError:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    match = re.search(r"v=(\d+)\.", version)
    if not match or int(match.group(1)) < 7:
        pytest.skip(f"deploy/redis/redis.conf needs redis-server >= 7, found {version.strip()!r}")
    return found


@contextmanager
def _redis_with_conf(
    data_dir: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], redis.Redis]]:
    """redis-server deploy/redis/redis.conf, with only port, dir and bind overridden."""
    port = free_port()
    argv = [_redis_server_binary(), str(REDIS_CONF), "--port", str(port), "--dir", str(data_dir)]
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "--bind", "127.0.0.1"], stdout=out, stderr=out)
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()  # BusyLoadingError (a ConnectionError) while the AOF loads
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start:\n" + log.read_text()) from None
                time.sleep(0.05)
        yield proc, client
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_redis_conf_is_durable_and_never_evicts(tmp_path: Path) -> None:
    with _redis_with_conf(tmp_path, tmp_path / "redis.log") as (_, client):
        config = {
            key: client.config_get(key)[key]
            for key in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory", "save")
        }
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) > 0  # an explicit ceiling, not "all the machine has"
    assert config["save"] == ""  # RDB off, as the file's comments explain


def test_redis_conf_keeps_queued_calls_across_a_sigkill(tmp_path: Path) -> None:
    """A crash (SIGKILL, no shutdown hook) after the everysec fsync: the AOF replays the
    queue at restart, every message intact and in order."""
    queue_key = Settings.model_fields["redis_key_prefix"].default + "ingest"
    messages = [
        celery_message(
            "ingest",
            [
                {
                    "project_id": 1,
                    "received_at": "2026-11-23T12:00:00Z",
                    "calls": [{"messageId": f"m-{i}"}],
                }
            ],
        )
        for i in range(200)
    ]
    log = tmp_path / "redis.log"
    with _redis_with_conf(tmp_path, log) as (proc, client):
        for start in range(0, len(messages), 50):
            client.lpush(queue_key, *messages[start : start + 50])
        client.hincrby("koala:received", "1", len(messages))
        time.sleep(1.5)  # past appendfsync everysec
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list((tmp_path / "appendonlydir").glob("*.incr.aof"))
    with _redis_with_conf(tmp_path, log) as (_, client):
        assert client.lrange(queue_key, 0, -1) == messages[::-1]
        assert client.hget("koala:received", "1") == b"200"


def test_redis_conf_refuses_writes_over_maxmemory_instead_of_evicting(tmp_path: Path) -> None:
    """noeviction: past maxmemory a push fails with OOM (the receiver answers 503 and the
    sender retries); nothing already queued is evicted."""
    queue_key = "koala:ingest"
    payload = b"x" * 10_000
    with _redis_with_conf(tmp_path, tmp_path / "redis.log") as (_, client):
        client.lpush(queue_key, *[payload] * 20)
        client.set("koala:breaker:state", b"{}", ex=3600)  # what volatile-* would evict first
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 200_000)
        pushed = 20
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for _ in range(1000):
                client.lpush(queue_key, payload)
                pushed += 1
        assert 20 < pushed < 1020
        assert client.llen(queue_key) == pushed
        assert client.exists("koala:breaker:state")
        assert int(client.info("stats")["evicted_keys"]) == 0
        client.rpop(queue_key, 10)  # a worker drains some: writes are accepted again
        client.lpush(queue_key, payload)


# --- deploy/pgbouncer: the ini as text, then a real PgBouncer in front of PostgreSQL -----

PGBOUNCER_DIR = ROOT / "deploy" / "pgbouncer"
PGBOUNCER_MIN = (1, 22, 1)  # DEALLOCATE ALL (1.22.0) and prepared statements around COPY (1.22.1)
PSYCOPG_PREPARED_MAX = 100  # psycopg's default Connection.prepared_max
RECEIVED = received_now()  # batches here may be retried: see received_now


def _pgbouncer_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # database names keep their case
    assert parser.read(PGBOUNCER_DIR / "pgbouncer.ini")
    return parser


def _connstr(entry: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in entry.split())


def _scram_secret_matches(secret: str, password: str) -> bool:
    """Verify a PostgreSQL SCRAM-SHA-256 secret (RFC 5802 StoredKey and ServerKey)."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", secret)
    assert match, secret
    iterations, salt, stored, server = match.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored) and (
        server_key == base64.b64decode(server)
    )


def test_pgbouncer_ini_pools_transactions_and_migrates_through_a_session_pool() -> None:
    ini = _pgbouncer_ini()
    main = ini["pgbouncer"]
    assert main["pool_mode"] == "transaction"
    # psycopg prepares statements after 5 runs: PgBouncer must track them (>= 1.21), for at
    # least as many statements as psycopg keeps prepared per connection.
    assert int(main["max_prepared_statements"]) >= PSYCOPG_PREPARED_MAX
    assert main["auth_type"] == "scram-sha-256"
    databases = {name: _connstr(entry) for name, entry in ini["databases"].items()}
    modes = {name: db.get("pool_mode", main["pool_mode"]) for name, db in databases.items()}
    assert modes == {"koala": "transaction", "koala_session": "session"}
    # both names lead to the same PostgreSQL database: migrate (session) and the rest
    assert len({(db["host"], db["port"], db["dbname"]) for db in databases.values()}) == 1
    # the example userlist is valid: `"user" "SCRAM secret"`, the secret of CHANGE_ME
    lines = [
        line
        for line in (PGBOUNCER_DIR / "userlist.txt.example").read_text().splitlines()
        if line.strip() and not line.startswith(";")
    ]
    assert lines
    for line in lines:
        user, secret = re.fullmatch(r'"([^"]+)" "([^"]+)"', line).groups()  # type: ignore[union-attr]
        assert user in main["stats_users"].split(",")
        assert _scram_secret_matches(secret, "CHANGE_ME")


def _pgbouncer_found() -> tuple[str, tuple[int, ...]] | None:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        return None
    out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)\.(\d+)", out)
    return found, tuple(int(n) for n in match.groups()) if match else (0, 0, 0)


def _pgbouncer_binary(minimum: tuple[int, ...] = PGBOUNCER_MIN) -> str:
    found = _pgbouncer_found()
    if found is None:
        pytest.skip(
            "no pgbouncer binary: install PgBouncer >= 1.22.1 to run this test"
            " (Debian 12's apt package is 1.18, too old for deploy/pgbouncer/pgbouncer.ini)"
        )
    binary, version = found
    if version < minimum:
        pytest.skip(
            f"{binary} is PgBouncer {'.'.join(map(str, version))}; this test needs"
            f" >= {'.'.join(map(str, minimum))}"
            " (deploy/pgbouncer/pgbouncer.ini: prepared statements in transaction mode)"
        )
    return binary


@dataclass
class Bouncer:
    port: int
    log: Path

    def url(self, database: str) -> str:
        # the example userlist's user and password: the test logs in with the shipped file
        return f"postgresql://koala:CHANGE_ME@127.0.0.1:{self.port}/{database}"

    def stats(self) -> dict[str, Any]:
        with psycopg.connect(self.url("pgbouncer"), autocommit=True) as conn:
            cur = psycopg.ClientCursor(conn)  # the admin console speaks the simple protocol only
            cur.execute("SHOW STATS")
            names = [d.name for d in cur.description or ()]
            return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}

    def config(self) -> dict[str, str]:
        with psycopg.connect(self.url("pgbouncer"), autocommit=True) as conn:
            cur = psycopg.ClientCursor(conn)
            cur.execute("SHOW CONFIG")
            return {row[0]: str(row[1]) for row in cur.fetchall()}


@contextmanager
def _pgbouncer(
    servers: Servers, minimum: tuple[int, ...] = PGBOUNCER_MIN, **overrides: str | None
) -> Iterator[Bouncer]:
    """A real PgBouncer run with a copy of deploy/pgbouncer/pgbouncer.ini and the example
    userlist. Replaced in the copy: where it listens, where the auth file is, and the
    server address of each database (this run's PostgreSQL and database, logging in there
    as the test server's user); every other setting is the file's, but `overrides` (None
    removes a setting)."""
    binary = _pgbouncer_binary(minimum)
    ini = _pgbouncer_ini()
    server = conninfo_to_dict(servers.database_url)
    host = str(server.get("host") or "127.0.0.1")
    for name, entry in ini["databases"].items():
        target = _connstr(entry)
        target.update(
            host=host,
            port=str(server.get("port") or 5432),
            dbname=str(server["dbname"]),
            user=str(server.get("user") or pwd.getpwuid(os.getuid()).pw_name),
        )
        ini["databases"][name] = " ".join(f"{k}={v}" for k, v in target.items())
    work = Path(tempfile.mkdtemp(prefix="koala-pgbouncer-"))
    shutil.copy(PGBOUNCER_DIR / "userlist.txt.example", work / "userlist.txt")
    port = free_port()
    ini["pgbouncer"].update(
        listen_addr="127.0.0.1",
        listen_port=str(port),
        unix_socket_dir="",
        auth_file=str(work / "userlist.txt"),
    )
    for key, value in overrides.items():
        if value is None:
            ini["pgbouncer"].pop(key, None)
        else:
            ini["pgbouncer"][key] = value
    with (work / "pgbouncer.ini").open("w") as out:
        ini.write(out)
    argv = [binary]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: run it as the server's owner
        owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
        argv += ["-u", pwd.getpwuid(owner).pw_name]
        for path in (work, *work.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
    log = work / "pgbouncer.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([*argv, str(work / "pgbouncer.ini")], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError("pgbouncer exited:\n" + log.read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbouncer did not listen:\n" + log.read_text()) from None
                time.sleep(0.05)
        yield Bouncer(port, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _calls(tag: str, n: int, poison: bool = False) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = [
        {
            "type": "track",
            "event": "Viewed",
            "messageId": f"{tag}-{i}",
            "userId": f"user-{tag}-{i % 2}",
            "anonymousId": f"anon-{tag}-{i}",
            "receivedAt": RECEIVED,
        }
        for i in range(n)
    ]
    if poison:  # jsonb refuses U+0000: the batch fails, is bisected in savepoints
        calls[1]["properties"] = {"note": "nul\u0000byte"}
    return calls


def _request(project: Project, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return queued(project.id, *calls, received_at=RECEIVED).to_wire()


def _worker_pool(url: str) -> ConnectionPool:
    """A pool like the one workers/tasks.py builds in each worker process."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": False},
        open=True,
        check=ConnectionPool.check_connection,
    )


PROBE_TABLES = """
CREATE TABLE IF NOT EXISTS deploy_probe_batches (task_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS deploy_probe_rows (task_id text NOT NULL, n int, payload jsonb);
"""


def _begin_batch(conn: psycopg.Connection) -> int:
    """A worker's batch transaction starts so (workers.tasks.ingest); returns the backend."""
    timeout = str(Settings.model_fields["statement_timeout_ms"].default)
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (timeout,))
    return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]


def _batch_body(conn: psycopg.Connection, task_id: str, rows: int, poison: bool) -> None:
    """The kinds of statement a worker's batch runs next: transaction-scoped advisory locks
    in one order, the claim of the batch, COPY in a savepoint; a poison row fails its
    savepoint (after which psycopg sends DEALLOCATE ALL) and the rest is written again."""
    keys = sorted(hash((task_id, i)) for i in range(3))
    conn.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (keys,)
    )
    claimed = conn.execute(
        "INSERT INTO deploy_probe_batches (task_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
        (task_id,),
    )
    assert claimed.fetchone() == (1,)
    good = [(task_id, n, Jsonb({"n": n})) for n in range(rows)]

    def copy(data: list[tuple[str, int, Jsonb]]) -> None:
        with (
            conn.transaction(),
            conn.cursor().copy("COPY deploy_probe_rows (task_id, n, payload) FROM STDIN") as out,
        ):
            for row in data:
                out.write_row(row)

    if poison:  # jsonb refuses U+0000
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            copy([*good, (task_id, rows, Jsonb({"note": "nul\u0000byte"}))])
    copy(good)
    written = conn.execute("SELECT count(*) FROM deploy_probe_rows WHERE task_id = %s", (task_id,))
    assert written.fetchone() == (rows,)


def _interleaved_batches(url: str, rounds: int, poison_round: int = 8) -> dict[str, set[int]]:
    """Run `rounds` pairs of batch transactions on two pooled connections: one pinned in its
    transaction while the other runs a whole batch, roles swapped each round, so statements
    psycopg prepared (after 5 runs) on one server connection run on the other one too.
    Returns the server backends each client connection used."""
    run = secrets.token_hex(3)
    used: dict[str, set[int]] = {"a": set(), "b": set()}
    with _worker_pool(url) as pool, pool.connection() as a, pool.connection() as b:
        conns = {"a": a, "b": b}
        for n in range(rounds):
            first, second = ("a", "b") if n % 2 == 0 else ("b", "a")
            with conns[first].transaction():
                used[first].add(_begin_batch(conns[first]))
                with conns[second].transaction():
                    used[second].add(_begin_batch(conns[second]))
                    _batch_body(conns[second], f"{run}-{n}-2", 5, poison=n == poison_round)
                _batch_body(conns[first], f"{run}-{n}-1", 5, poison=False)
    return used


def test_pgbouncer_ini_carries_worker_transactions_with_prepared_statements(
    servers: Servers, db: psycopg.Connection
) -> None:
    """Through a real PgBouncer with this file, on a psycopg pool: set_config
    statement_timeout, pg_advisory_xact_lock and COPY in savepoints, in one transaction,
    with psycopg's prepared statements running on server connections they were not
    prepared on; nothing of a transaction outlives it on the shared server connections."""
    db.execute(PROBE_TABLES)
    with _pgbouncer(servers) as bouncer:
        config = bouncer.config()
        for key, value in _pgbouncer_ini()["pgbouncer"].items():
            if key not in ("listen_addr", "listen_port", "unix_socket_dir", "auth_file"):
                assert config[key] == value, key  # every setting named exists and is applied
        used = _interleaved_batches(bouncer.url("koala"), rounds=20)
        stats = bouncer.stats()["koala"]
        with psycopg.connect(bouncer.url("koala"), autocommit=True) as conn:
            default = db.execute("SHOW statement_timeout").fetchone()
            assert conn.execute("SHOW statement_timeout").fetchone() == default  # it was local
            held = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            ).fetchone()
            assert held == (0,)  # released at each commit
    assert all(len(backends) == 2 for backends in used.values()), used
    assert stats["total_client_parse_count"] > 0  # psycopg did prepare statements
    assert db.execute("SELECT count(*) FROM deploy_probe_rows").fetchone()[0] >= 20 * 2 * 5  # type: ignore[index]


def test_pgbouncer_without_prepared_statement_tracking_breaks_the_same_transactions(
    servers: Servers, db: psycopg.Connection
) -> None:
    """The control: the same PgBouncer file with max_prepared_statements = 0 (what PgBouncer
    < 1.21 does) fails the workload above, so that setting is what makes it pass."""
    db.execute(PROBE_TABLES)
    with (
        _pgbouncer(servers, max_prepared_statements="0") as bouncer,
        pytest.raises(
            (psycopg.errors.InvalidSqlStatementName, psycopg.errors.DuplicatePreparedStatement)
        ),
    ):
        _interleaved_batches(bouncer.url("koala"), rounds=20)


def _queue_poisoned_batches(servers: Servers, project: Project, queue: str, tag: str) -> None:
    """30 batches of 3 calls on `queue`, the 11th with a poison call (savepoints, bisection)."""
    messages = [
        celery_message(queue, [_request(project, _calls(f"{tag}{n}", 3, poison=n == 10))])
        for n in range(30)
    ]
    redis.Redis.from_url(servers.redis_url).lpush(servers.prefix + queue, *messages)


def _bouncer_worker(
    servers: Servers, tmp: Path, bouncer: Bouncer, queue: str, name: str, **env: str
) -> Proc:
    """A real worker (prefork, 2 processes) on `queue`, its DATABASE_URL through PgBouncer's
    transaction-pooling database."""
    return start_worker(
        servers,
        tmp,
        name=name,
        concurrency=2,
        DATABASE_URL=bouncer.url("koala"),
        KOALA_QUEUE_NAME=queue,
        **env,
    )


def _settled_with_one_poison(db: psycopg.Connection, project: Project) -> bool:
    """Every call of `_queue_poisoned_batches` stored, but the poison one dead-lettered."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM events WHERE project_id = %(p)s),"
        " (SELECT count(*) FROM dead_letters WHERE project_id = %(p)s)",
        {"p": project.id},
    ).fetchone()
    return row == (30 * 3 - 1, 1)


@pytest.mark.slow
def test_pgbouncer_ini_serves_a_real_worker_and_migrate(
    servers: Servers, project: Project, db: psycopg.Connection, tmp_path: Path
) -> None:
    """As deployed: `koala-ingest migrate` through the session-mode database, and a real
    Celery worker (prefork, psycopg pool per process) storing batches through the
    transaction-mode one, its prepared statements included."""
    queue = f"bouncer-{secrets.token_hex(3)}"
    with _pgbouncer(servers) as bouncer:
        done = subprocess.run(
            koala("migrate"),
            env=servers.env(DATABASE_URL=bouncer.url("koala_session")),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
        _queue_poisoned_batches(servers, project, queue, "w")
        worker = _bouncer_worker(servers, tmp_path, bouncer, queue, "bouncer")
        try:
            wait_for(lambda: _settled_with_one_poison(db, project), timeout=60)
            stats = bouncer.stats()["koala"]
        finally:
            worker.stop()
    assert stats["total_client_parse_count"] > 0, stats  # the worker's prepared statements
    assert "prepared statement" not in worker.output()


@pytest.mark.slow
@pytest.mark.parametrize("prepared", ["false", "true"])
def test_prepared_statements_off_carry_a_real_worker_through_a_pgbouncer_without_them(
    servers: Servers, project: Project, db: psycopg.Connection, tmp_path: Path, prepared: str
) -> None:
    """KOALA_DB_PREPARED_STATEMENTS=false, for a transaction-pooling PgBouncer that cannot
    carry prepared statements (any before 1.21, or max_prepared_statements = 0): a real
    worker stores batches through it, COPY, savepoints and the poison-call bisection
    included. The control (the default, true) fails there with psycopg's prepared
    statements missing on other server connections. Runs on Debian 12's PgBouncer 1.18."""
    found = _pgbouncer_found()
    old = found is not None and found[1] < (1, 21, 0)
    queue = f"bouncer-{secrets.token_hex(3)}"
    with _pgbouncer(
        servers,
        minimum=(1, 0, 0),
        # settings an old PgBouncer does not know; on a newer one, tracking turned off
        max_prepared_statements=None if old else "0",
    ) as bouncer:
        _queue_poisoned_batches(servers, project, queue, "np")
        worker = _bouncer_worker(
            servers, tmp_path, bouncer, queue, "noprepare", KOALA_DB_PREPARED_STATEMENTS=prepared
        )
        try:
            if prepared == "false":
                wait_for(lambda: _settled_with_one_poison(db, project), timeout=60)
            else:
                wait_for(lambda: "prepared statement" in worker.output(), timeout=60)
        finally:
            worker.stop()
    if prepared == "false":
        assert "prepared statement" not in worker.output()


# --- deploy/kubernetes ---------------------------------------------------------------

K8S_DIR = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests target: the native preStop `sleep` action is on by
# default from 1.30; 1.31 is the oldest release still maintained.
K8S_VERSION = "1.31.0"
# KEDA's `redis` (lists) scaler: every metadata parameter it documents.
KEDA_REDIS_METADATA = {
    "address",
    "host",
    "port",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
ROLES = {"web": "Deployment", "worker": "Deployment", "beat": "Deployment", "migrate": "Job"}
SETTING_NAMES = {"DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "PORT"}


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def _k8s(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for _, d in _k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _workload(role: str) -> dict[str, Any]:
    return _k8s(
        ROLES[role], f"koala-ingest-{role}" if role != "migrate" else "koala-ingest-migrate"
    )


def _container(role: str) -> dict[str, Any]:
    [container] = _workload(role)["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _container_env(role: str) -> dict[str, str]:
    """The environment the container gets from its envFrom ConfigMap/Secrets and env."""
    env: dict[str, str] = {}
    container = _container(role)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_k8s("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_k8s("Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """ingest.config.load() with exactly `env` as the koala-ingest environment."""
    for name in list(os.environ):
        if name.startswith("KOALA_") or name in SETTING_NAMES:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load()


def test_kubernetes_manifests_validate_against_the_kubernetes_api_schema() -> None:
    kinds, errors = [], []
    for filename, doc in _k8s_documents():
        kinds.append(doc["kind"])
        if doc["apiVersion"].startswith(("keda.sh/", "kustomize.config.k8s.io/")):
            continue  # not in the Kubernetes schema: checked by the KEDA and kustomize tests
        try:  # strict: an unknown (misspelt) field is an error, as the API server says
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(str(p) for p in error.path)
            errors.append(f"{filename}: {doc['kind']} {where}: {error.message}")
    assert not errors, "\n".join(errors)
    assert Counter(kinds) == {
        "Kustomization": 1,
        "ConfigMap": 1,
        "Secret": 3,
        "Job": 1,
        "Deployment": 3,
        "Service": 1,
        "ScaledObject": 1,
        "TriggerAuthentication": 1,
    }


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    [image] = kustomization["images"]
    assert {_container(role)["image"] for role in ROLES} == {image["name"]}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_kubernetes_container_runs_a_real_koala_ingest_command(role: str) -> None:
    workload = _workload(role)
    assert workload["metadata"]["labels"]["app.kubernetes.io/component"] == role
    program, command_role, *rest = _container(role)["command"]
    assert (program, command_role, rest) == ("koala-ingest", role, [])
    done = subprocess.run(koala(role, "--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_kubernetes_env_names_are_real_settings_with_valid_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names: set[str] = set()
    for _, doc in _k8s_documents():
        if doc["kind"] == "ConfigMap":
            names |= set(doc["data"])
    for role in ROLES:
        for source in _container(role).get("envFrom", []):
            if "secretRef" in source:
                names |= set(_k8s("Secret", source["secretRef"]["name"])["stringData"])
        names |= {item["name"] for item in _container(role).get("env", [])}
    assert names and names <= _variables(), names - _variables()
    for role in ROLES:
        try:
            _settings_from(_container_env(role), monkeypatch)
        except ConfigError as error:
            pytest.fail(f"{role}: {error}")


def test_kubernetes_stop_grace_periods_cover_a_graceful_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web = _workload("web")["spec"]["template"]["spec"]
    pre_stop = web["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    web_settings = _settings_from(_container_env("web"), monkeypatch)
    # preStop runs inside the grace period; then uvicorn drains in-flight requests, and the
    # receiver exits at most LIFESPAN_SHUTDOWN_SECONDS later
    stop = web_settings.web_drain_seconds + cli.LIFESPAN_SHUTDOWN_SECONDS
    assert pre_stop >= 5 and web["terminationGracePeriodSeconds"] > pre_stop + stop
    settings = _settings_from(_container_env("worker"), monkeypatch)
    batch = settings.breaker_cooldown_seconds + settings.statement_timeout_ms / 1000
    assert _workload("worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > batch
    assert "replicas" not in _workload("worker")["spec"]  # KEDA's HPA owns it
    beat = _workload("beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    for role in ROLES:
        pod = _workload(role)["spec"]["template"]["spec"]
        assert pod["enableServiceLinks"] is False  # no <SERVICE>_PORT=tcp://... variables
        resources = _container(role)["resources"]
        assert resources["requests"]["memory"] and resources["limits"]["memory"]


def test_keda_scales_the_worker_deployment_on_the_real_queue_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scaled = _k8s("ScaledObject", "koala-ingest-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == _workload("worker")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "redis" and set(meta) <= KEDA_REDIS_METADATA
    assert int(meta["listLength"]) > 0
    # the key the receiver pushes to and the workers read: with the ConfigMap's settings,
    # which are the defaults
    assert meta["listName"] == _settings_from(_container_env("worker"), monkeypatch).queue_key
    assert meta["listName"] == _settings_from({}, monkeypatch).queue_key == "koala:ingest"
    # the same Redis as the workers' REDIS_URL, and its password
    url = urlsplit(_container_env("worker")["REDIS_URL"])
    assert meta["address"] == f"{url.hostname}:{url.port or 6379}"
    assert meta["databaseIndex"] == (url.path.strip("/") or "0")
    auth = _k8s("TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
    [ref] = auth["secretTargetRef"]
    assert ref["parameter"] == "password"
    assert _k8s("Secret", ref["name"])["stringData"][ref["key"]] == url.password


def test_kubernetes_migration_avoids_pgbouncer_transaction_pooling() -> None:
    """migrate holds a session advisory lock: its DATABASE_URL goes straight to PostgreSQL
    or to a session-mode PgBouncer database; the other pods use the transaction pool."""
    ini = _pgbouncer_ini()
    modes = {
        name: _connstr(entry).get("pool_mode", ini["pgbouncer"]["pool_mode"])
        for name, entry in ini["databases"].items()
    }
    bouncer_port = int(ini["pgbouncer"]["listen_port"])
    for role in ROLES:
        url = urlsplit(_container_env(role)["DATABASE_URL"])
        if url.port != bouncer_port:
            continue  # straight to PostgreSQL: anything goes
        expected = "session" if role == "migrate" else "transaction"
        assert modes[url.path.strip("/")] == expected, role


@pytest.mark.slow
def test_kubernetes_web_probes_and_ports_answer_on_the_real_receiver(
    servers: Servers, project: Project, tmp_path: Path
) -> None:
    """The receiver with the ConfigMap's settings, on a Redis run with deploy/redis/redis.conf:
    the probes' paths answer on the port the manifests name, a call lands in the Redis list
    KEDA watches, and with Redis gone readiness fails while liveness holds (no restarts)."""
    container = _container("web")
    config = _container_env("web")
    [http] = container["ports"]
    assert http["containerPort"] == int(config["PORT"])
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert {p["port"] for p in probes.values()} == {http["name"]}
    [service_port] = _k8s("Service", "koala-ingest-web")["spec"]["ports"]
    assert service_port["targetPort"] in (http["name"], http["containerPort"])
    assert _k8s("Service", "koala-ingest-web")["spec"]["selector"].items() <= (
        _workload("web")["spec"]["template"]["metadata"]["labels"].items()
    )
    list_name = _k8s("ScaledObject", "koala-ingest-worker")["spec"]["triggers"][0]["metadata"][
        "listName"
    ]
    env = {k: v for k, v in config.items() if k.startswith("KOALA_") and k != "KOALA_HOST"}
    with _redis_with_conf(tmp_path, tmp_path / "redis.log") as (redis_proc, client):
        port = client.connection_pool.connection_kwargs["port"]
        receiver = start_receiver(servers, tmp_path, **env, REDIS_URL=f"redis://127.0.0.1:{port}/0")
        try:
            live, ready = (receiver.url + probes[k]["path"] for k in probes)
            assert httpx.get(live).status_code == 200
            assert httpx.get(ready).status_code == 200
            sent = httpx.post(
                receiver.url + "/v1/track",
                auth=(project.public_key, ""),
                json={"userId": "u-1", "event": "Deployed", "messageId": "k8s-1"},
            )
            assert sent.status_code == 200, sent.text
            assert client.llen(list_name) == 1
            redis_proc.kill()
            redis_proc.wait()
            wait_for(lambda: httpx.get(ready).status_code == 503, timeout=10)
            assert httpx.get(live).status_code == 200
        finally:
            receiver.proc.stop()


# --- deploy/README.md --------------------------------------------------------------------


def test_deploy_readme_names_every_deploy_file_and_only_real_commands_and_settings() -> None:
    text = (ROOT / "deploy" / "README.md").read_text()
    deploy_files = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "deploy").rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    named = set(re.findall(r"deploy/[\w./-]+\.(?:service|example|yaml|conf|ini|json)\b", text))
    named |= {f"deploy/kubernetes/{name}" for name in re.findall(r"`([\w.-]+\.yaml)`", text)}
    assert named <= deploy_files, named - deploy_files  # no file that does not exist
    assert deploy_files <= named, deploy_files - named  # and every file is explained
    # the program alone or as an installed path (.../bin/koala-ingest), not /opt/koala-ingest
    commands = set(re.findall(r"(?:(?<![\w/.-])|(?<=bin/))koala-ingest ([a-z]+)", text))
    assert {"migrate", "web", "worker", "beat"} <= commands
    for command in commands:
        done = subprocess.run(koala(command, "--help"), capture_output=True, timeout=60)
        assert done.returncode == 0, command
    settings = set(re.findall(r"\bKOALA_[A-Z_]+[A-Z]\b", text))
    assert settings <= _variables(), settings - _variables()


def test_deploy_readme_first_kubernetes_step_applies_what_the_migration_job_needs() -> None:
    """README: `apply -k ... -l 'app.kubernetes.io/component in (...)'` before the rest."""
    text = (ROOT / "deploy" / "README.md").read_text()
    [selected] = re.findall(r"-l 'app\.kubernetes\.io/component in \(([\w,]+)\)'", text)
    components = set(selected.split(","))
    chosen = {
        (d["kind"], d["metadata"]["name"])
        for _, d in _k8s_documents()
        if d.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") in components
    }
    needs = {("Job", "koala-ingest-migrate")}
    for source in _container("migrate")["envFrom"]:
        if "configMapRef" in source:  # Secrets are applied by hand beforehand
            needs.add(("ConfigMap", source["configMapRef"]["name"]))
    assert chosen == needs
    for _, doc in _k8s_documents():  # `rollout restart deployment -l app.kubernetes.io/name=...`
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "koala-ingest"


def test_dockerfile_builds_the_package_from_what_it_copies_and_runs_as_the_manifests_say(
    tmp_path: Path,
) -> None:
    """Docker does not run here: build the wheel from exactly the files the Dockerfile
    copies, and check the image's user, entrypoint and settings against the manifests."""
    text = (ROOT / "Dockerfile").read_text()
    copied = [
        name
        for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)
        for name in line.split()
    ]
    context = tmp_path / "context"
    context.mkdir()
    for name in copied:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "wheels").glob("koala_ingest-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    migrations = sorted(p.name for p in (ROOT / "ingest" / "migrations").glob("*.sql"))
    assert migrations and all(f"ingest/migrations/{m}" in names for m in migrations)
    assert "workers/tasks.py" in names
    assert 'ENTRYPOINT ["koala-ingest"]' in text
    assert re.search(r"^USER 10001$", text, re.M)
    for role in ROLES:
        assert _container(role)["command"][0] == "koala-ingest"
        context_ = _workload(role)["spec"]["template"]["spec"].get("securityContext", {})
        assert context_.get("runAsUser", 10001) == 10001
    env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.+)$", text, re.M).group(1)))  # type: ignore[union-attr]
    assert set(env) - {"PYTHONUNBUFFERED"} <= _variables()
