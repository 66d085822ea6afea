"""What every job kind is made of: a `Job` with `total()` and `step(cursor)`, the `Step` it
returns, the `Context` it may use, and the `Builder` that makes one from its row. The
kinds are registered in workers/jobs/kinds.py; workers/jobs/runner.py drives them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import psycopg
import redis

from ingest.config import Settings
from workers.normalize import Rules

# A runner that has not written progress for this long is presumed dead and its job may be
# taken over (a taken-over runner cannot write: its token is fenced). Every step is a
# bounded batch, each statement under KOALA_STATEMENT_TIMEOUT_MS; this leaves room for
# several statements stuck on locks for the whole timeout.
STALE_SECONDS = 600.0


@dataclass(slots=True)
class Step:
    """What one step did: where the next one starts, units done, counts, errors."""

    cursor: Any
    done: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


class Job(Protocol):
    kind: ClassVar[str]

    def total(self, conn: psycopg.Connection) -> int | None: ...

    def step(self, conn: psycopg.Connection, cursor: Any) -> Step: ...


@dataclass(slots=True)
class Context:
    """What jobs may use besides their connection."""

    settings: Settings
    rules: Rules
    redis: Callable[[], redis.Redis]


def parse_time(value: str) -> datetime:
    """ISO-8601 date or time; without an offset it is UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


Builder = Callable[[dict[str, Any], Context], Job]
