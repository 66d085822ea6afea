"""What every job kind is made of: a `Job` with `total()` and `step(cursor)`, the `Step` it
returns, the `Context` it may use, and the `Builder` that makes one from its row. The
kinds are registered in workers/jobs/kinds.py; workers/jobs/runner.py drives them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import psycopg
import redis

from ingest.config import Settings
from ingest.identifiers import Rules


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


Builder = Callable[[dict[str, Any], Context], Job]
