"""The retry and dead-letter policy of a batch (workers/failure/policy.py), pure: no Redis,
no PostgreSQL. tests/test_tasks.py and tests/test_dead_letters.py see it carried out by
real workers."""

from __future__ import annotations

import psycopg
import pytest

from workers.failure.policy import (
    TRANSIENT_EXHAUSTED,
    DeadLetter,
    Hold,
    Retry,
    RetryPolicy,
    backoff,
    is_transient,
)

POLICY = RetryPolicy(max_attempts=3, max_age_seconds=3600, backoff_max_seconds=300)
DOWN = psycopg.OperationalError("connection refused")


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection"),
        psycopg.errors.DeadlockDetected("deadlock"),
        psycopg.errors.SerializationFailure("could not serialize"),
    ],
)
def test_transient_errors_are_retried_with_backoff_within_the_limits(error: Exception) -> None:
    assert is_transient(error)
    outcome = POLICY.decide(attempts=0, age_seconds=10, error=error)
    assert isinstance(outcome, Retry) and 0.5 <= outcome.after <= 1


def test_retries_stop_at_the_attempt_limit_and_the_age_limit_then_dead_letter() -> None:
    assert isinstance(POLICY.decide(2, 10, DOWN), Retry)
    assert POLICY.decide(3, 10, DOWN) == DeadLetter(TRANSIENT_EXHAUSTED)
    assert POLICY.decide(0, 3600, DOWN) == DeadLetter(TRANSIENT_EXHAUSTED)


def test_an_unforeseen_error_holds_the_batch_instead_of_losing_it() -> None:
    """A failed Celery task is deleted from Redis: anything not foreseen keeps the batch,
    retried at the longest backoff, however many times it failed."""
    missing = psycopg.errors.UndefinedTable('relation "events" does not exist')
    assert not is_transient(missing) and not is_transient(KeyError("x"))
    assert POLICY.decide(0, 10, missing) == Hold(300, "unforeseen")
    assert POLICY.decide(99, 10**6, KeyError("x")) == Hold(300, "unforeseen")


def test_when_the_dead_letters_cannot_be_written_the_batch_is_held() -> None:
    assert POLICY.when_dead_letters_fail() == Hold(300, "dead letters not writable")


def test_backoff_doubles_its_ceiling_up_to_the_cap_with_full_jitter() -> None:
    ceilings = [backoff(n, cap=300, uniform=lambda low, high: high) for n in range(11)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff(5, cap=300, uniform=lambda low, high: low) == 0.5
