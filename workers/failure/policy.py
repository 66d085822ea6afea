"""What a batch's failure is, and what to do about it. Pure rules: no Redis, no PostgreSQL.

In the spirit of Sentry's arroyo (`DlqPolicy`, `DlqLimit`): the limits are a small object
that decides, and `workers/tasks.py` only carries the decision out with Celery.

- **transient** (`RETRYABLE`): PostgreSQL unreachable or restarting, deadlocks and
  serialization failures between concurrent batches, a full lock table: the batch is
  retried with backoff until `KOALA_RETRY_MAX_ATTEMPTS` or `KOALA_RETRY_MAX_AGE_SECONDS`,
  then its calls become dead letters (`transient_exhausted`, the only ones the automatic
  replay sends again);
- **unforeseen** (anything else reaching the task: a schema a deploy forgot to migrate):
  the batch is *held*, retried slowly for as long as it takes. A failed Celery task is
  acknowledged or rejected, and on Redis both delete the message: failing it would lose
  the batch (tests/test_tasks.py renames a table under a worker and sees it stored later);
- a call that breaks the batch for good is not a batch failure: `isolation` finds it by
  bisection and only it becomes a dead letter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

# Errors that mean "try again later", not "this call is bad". Live batches, job steps and
# replays retry the same ones.
RETRYABLE: tuple[type[BaseException], ...] = (
    # also "out of shared memory" (class 53): a lock table filled by concurrent batches
    # (docs/scaling.md, max_locks_per_transaction)
    psycopg.OperationalError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
)
TRANSIENT_EXHAUSTED = "transient_exhausted"


def is_transient(error: BaseException) -> bool:
    return isinstance(error, RETRYABLE)


def backoff(
    attempt: int, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Exponential backoff with full jitter: up to 1, 2, 4, ... seconds, at most `cap`
    (never under half a second: a retry at once would meet the same trouble)."""
    return uniform(0.5, min(cap, 2**attempt))


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `after` seconds (transient, within the limits)."""

    after: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Give up on the batch: its calls become dead letters with `reason`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep the batch queued and try again after `after` seconds, however long it takes:
    nothing may be acknowledged that is not in PostgreSQL."""

    after: float
    why: str


Outcome = Retry | DeadLetter | Hold


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The limits of retrying a batch (KOALA_RETRY_* settings)."""

    max_attempts: int
    max_age_seconds: float
    backoff_max_seconds: float

    @classmethod
    def of(cls, settings: Any) -> RetryPolicy:
        return cls(
            settings.retry_max_attempts,
            settings.retry_max_age_seconds,
            settings.retry_backoff_max_seconds,
        )

    def decide(self, attempts: int, age_seconds: float, error: BaseException) -> Outcome:
        """`attempts`: retries so far; `age_seconds`: how long ago its oldest fresh call
        was received (a replay's calls do not age: they were received long ago)."""
        if not is_transient(error):
            return Hold(self.backoff_max_seconds, "unforeseen")
        if attempts < self.max_attempts and age_seconds < self.max_age_seconds:
            return Retry(backoff(attempts, self.backoff_max_seconds))
        return DeadLetter(TRANSIENT_EXHAUSTED)

    def when_dead_letters_fail(self) -> Hold:
        """The dead letters could not be written either (the store itself is down): keep
        the batch in the queue."""
        return Hold(self.backoff_max_seconds, "dead letters not writable")
