"""What each worker process opens once, after the fork: a PostgreSQL pool and a Redis
client (ledger, breaker, counters). Celery's prefork pool forks after the app is imported:
a connection made before would be shared by every child."""

from __future__ import annotations

import os

import redis
from psycopg_pool import ConnectionPool

from ingest import redis_clients
from ingest.config import get_settings


class Pools:
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
                kwargs={"autocommit": False, **settings.connection_options},
                open=True,
                check=ConnectionPool.check_connection,
            )
            cls.pid = os.getpid()
        return cls.pool


class RedisClient:
    """One Redis client per worker process (breaker and counters), created after the fork."""

    pid: int | None = None
    client: redis.Redis | None = None

    @classmethod
    def get(cls) -> redis.Redis:
        if cls.client is None or cls.pid != os.getpid():
            cls.client = redis_clients.sync_client(
                get_settings().require_redis_url(), socket_timeout=5, socket_connect_timeout=2
            )
            cls.pid = os.getpid()
        return cls.client
