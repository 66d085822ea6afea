"""`Ops`: what every operation runs with: one connection, the settings, Redis on demand,
and the actor asking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.operations.actor import Actor
from ingest.operations.errors import NotFound
from ingest.store import audit, projects
from ingest.store.projects import Project


@dataclass
class Ops:
    conn: psycopg.Connection  # autocommit: each operation opens the transactions it needs
    settings: Settings
    actor: Actor
    # a sync client made when first needed (most reads never touch Redis)
    redis_factory: Callable[[], redis.Redis] | None = None
    _redis: redis.Redis | None = field(default=None, init=False, repr=False)

    @property
    def rules(self) -> Rules:
        return Rules.of(self.settings)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            if self.redis_factory is None:
                from ingest import redis_clients

                self._redis = redis_clients.sync_client(self.settings.require_redis_url())
            else:
                self._redis = self.redis_factory()
        return self._redis

    def close(self) -> None:
        if self._redis is not None and self.redis_factory is None:
            self._redis.close()
        self._redis = None

    def project(self, name: str) -> Project:
        """An active project this actor may see; 404 otherwise (the same answer for one
        that does not exist, so a limited token learns no names)."""
        found = projects.get_by_name(self.conn, name)
        if found is None or not self.actor.sees(found.id):
            raise NotFound("unknown_project", f"no project named {name!r}")
        return found

    def acting_on(self, name: str) -> Project:
        """A project this actor may act on (an operator of it)."""
        project = self.project(name)
        self.actor.check_acts(project.id)
        return project

    def record(
        self,
        action: str,
        project: Project | None,
        selection: dict[str, Any],
        count: int | None,
    ) -> None:
        """One line in the audit log: who did what, to which selection, how many rows."""
        audit.record(
            self.conn,
            self.actor.name,
            action,
            project.id if project else None,
            selection,
            count,
        )
