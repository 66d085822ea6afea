"""Each project's company exceptions for the batches, without a query per call or batch.

A worker process keeps every project's company domains (`projects.company_free_domains`,
`company_work_domains`, a few short lists) in memory and reloads them, in one query, when
they are older than KOALA_KEY_CACHE_SECONDS: a change made through the operations layer
applies to calls normalized from then on within that time, as a key change does in the
receivers (ingest/keys.py). The batch folds them into its rules once per project
(`Rules.for_project`, workers/pipeline.py), so normalize stays pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import psycopg

from ingest.identifiers import CompanyDomains, Rules
from ingest.store import projects


class ProjectRules:
    def __init__(self, refresh_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._domains: dict[int, CompanyDomains] = {}
        self._loaded_at: float | None = None

    def rules(self, conn: psycopg.Connection, base: Rules) -> Rules:
        """`base` with every project's company exceptions, reloaded first if stale. The
        reload is its own short transaction, before the batch's."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self._refresh_seconds:
            with conn.transaction():
                found = projects.company_domains(conn)
            self._domains = {
                project_id: CompanyDomains(frozenset(free), frozenset(work))
                for project_id, (free, work) in found.items()
            }
            self._loaded_at = now
        return replace(base, projects=self._domains)


_cache: ProjectRules | None = None


def current(conn: psycopg.Connection, base: Rules, refresh_seconds: float) -> Rules:
    """The worker process's cache (one per process: the pool is per process too)."""
    global _cache
    if _cache is None:
        _cache = ProjectRules(refresh_seconds)
    return _cache.rules(conn, base)
