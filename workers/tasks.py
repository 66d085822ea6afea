"""The one place Celery is wired in: the app, its settings, the base task, the tasks, beat.

Delivery is at-least-once and writes are idempotent: a task is acknowledged only after its
transaction commits (`acks_late`), a task whose worker process dies is redelivered
(`reject_on_worker_lost`, and kombu's visibility timeout for a whole worker lost), and a
redelivered batch finds its messageIds taken and writes nothing twice.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import psycopg
from celery import Celery, Task
from psycopg_pool import ConnectionPool

from ingest.config import Settings, get_settings
from ingest.queue import TASK_NAME
from ingest.store import message_ids
from workers import pipeline

log = logging.getLogger(__name__)

# Errors that mean "try again later", not "this call is bad": PostgreSQL unreachable or
# restarting, deadlocks and serialization failures between concurrent batches.
RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)


def make_app(settings: Settings) -> Celery:
    app = Celery("koala_ingest", set_as_current=True)
    app.conf.update(
        broker_url=settings.redis_url,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": settings.redis_key_prefix,
            # kombu scans for expired unacked messages every interval x throttle seconds
            # (100 s by default); scan every few seconds so a batch of a worker that died
            # is redelivered soon after its visibility timeout.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix=settings.redis_key_prefix + "redbeat:",
        # A standby beat takes over within this many seconds of the active one dying.
        redbeat_lock_timeout=60,
        beat_max_loop_interval=10,
        beat_schedule={
            "expire-message-ids": {
                "task": "koala.expire_message_ids",
                "schedule": timedelta(hours=1),
            },
        },
    )
    return app


app = make_app(get_settings())


class _Pools:
    """One connection pool per worker process, created after the fork on first use."""

    pid: int | None = None
    pool: ConnectionPool | None = None

    @classmethod
    def get(cls) -> ConnectionPool:
        if cls.pool is None or cls.pid != os.getpid():
            settings = get_settings()
            cls.pool = ConnectionPool(
                settings.require_database_url(),
                min_size=1,
                max_size=settings.db_pool_max_size,
                kwargs={"autocommit": False},
                open=True,
                check=ConnectionPool.check_connection,
            )
            cls.pid = os.getpid()
        return cls.pool


class DatabaseTask(Task):  # type: ignore[misc]
    """Base task: work runs in one transaction; RETRYABLE errors become retries with
    exponential backoff and jitter, so a PostgreSQL restart delays calls but loses none."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = RETRYABLE
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = None  # bounded by age in the dead-letter issue; never drop a batch here


@app.task(name=TASK_NAME, base=DatabaseTask, bind=True)
def ingest(self: Task, requests: list[dict[str, Any]]) -> dict[str, int]:
    """Process one queued batch (one or more whole HTTP requests)."""
    settings = get_settings()
    blocked = frozenset(settings.blocked_identifiers)
    with _Pools.get().connection() as conn, conn.transaction():
        result = pipeline.process(conn, requests, blocked)
    summary = {
        what: result.total(what) for what in ("stored", "duplicates", "rejected", "dead_lettered")
    }
    log.info("batch done %s", summary)
    return summary


@app.task(name="koala.expire_message_ids", base=DatabaseTask, bind=True)
def expire_message_ids(self: Task) -> int:
    """Forget dedup keys older than the window (a messageId seen again after that is new)."""
    days = get_settings().dedup_window_days
    with _Pools.get().connection() as conn, conn.transaction():
        deleted = message_ids.expire(conn, days)
    log.info("expired %d dedup keys older than %d days", deleted, days)
    return deleted
