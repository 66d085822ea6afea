"""Project keys for the receiver, without a database query per request.

All active projects are loaded into memory and reloaded every `refresh_seconds`, so a
revoked key stops working within that time. A key not in the cache waits for a reload
that starts after the request arrived (misses share it, at most one per `miss_interval`
seconds): a project is usable as soon as it is created, while a flood of wrong keys costs
PostgreSQL at most one query a second and each wrong key up to a second of waiting.

After a rotation a project's previous key is taken until its grace ends: the cache holds
it apart from current keys with the time it expires (on the monotonic clock, measured from
PostgreSQL's `now()` so a skewed receiver clock cannot shorten the grace), so a current
key's lookup is still one dict lookup, and a previous key is refused from its expiry on,
as an unknown key, without waiting for a reload (the next reload drops it anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from ingest.store import projects
from ingest.store.projects import Project

log = logging.getLogger(__name__)


class ProjectKeys:
    def __init__(
        self, database_url: str, refresh_seconds: float, miss_interval: float = 1.0
    ) -> None:
        self._database_url = database_url
        self._refresh_seconds = refresh_seconds
        self._miss_interval = miss_interval
        self._by_key: dict[str, Project] = {}
        # previous keys in their grace: the project and when (time.monotonic()) it ends
        self._previous: dict[str, tuple[Project, float]] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._miss_lock = asyncio.Lock()
        self.healthy = False

    @property
    def loaded(self) -> bool:
        return self._loaded_at > 0

    async def reload(self) -> None:
        async with self._lock:
            async with await psycopg.AsyncConnection.connect(
                self._database_url, autocommit=True, connect_timeout=5
            ) as conn:
                db_now = await projects.now_async(conn)
                rows = await projects.list_active_async(conn)
            loaded_at = time.monotonic()
            self._by_key = {row.public_key: row for row in rows}
            self._previous = {
                row.previous_public_key: (
                    row,
                    loaded_at + (row.previous_key_expires_at - db_now).total_seconds(),
                )
                for row in rows
                if row.previous_public_key and row.previous_key_expires_at
            }
            self._loaded_at = loaded_at
            self.healthy = True

    async def get(self, key: str | None) -> Project | None:
        if not key:
            return None
        project = self._by_key.get(key)
        if project is not None:
            return project
        project = self._previous_key(key)
        if project is not None:
            return project
        arrived = time.monotonic()
        async with self._miss_lock:
            if self._loaded_at <= arrived:
                # No reload began after this request arrived: do one, but no sooner than
                # miss_interval after the last, so wrong keys cannot hammer PostgreSQL.
                await asyncio.sleep(max(0.0, self._loaded_at + self._miss_interval - arrived))
                try:
                    await self.reload()
                except (psycopg.Error, OSError) as error:
                    self.healthy = False
                    log.warning("project key reload failed: %s", error)
        return self._by_key.get(key) or self._previous_key(key)

    def _previous_key(self, key: str) -> Project | None:
        """The project whose previous key this is, while its grace lasts."""
        found = self._previous.get(key)
        if found is None or time.monotonic() >= found[1]:
            return None
        return found[0]

    async def run(self) -> None:
        """Reload forever (a background task of the receiver)."""
        while True:
            try:
                await self.reload()
            except (psycopg.Error, OSError) as error:
                self.healthy = False
                log.warning("project key reload failed: %s", error)
                await asyncio.sleep(min(self._refresh_seconds, 2.0))
                continue
            await asyncio.sleep(self._refresh_seconds)
