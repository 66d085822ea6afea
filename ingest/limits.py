"""Per-project limits: calls per second and calls queued, so one noisy project cannot fill
the queue everyone shares (issue #17: 100 projects steady while one backfills).

Like Segment's per-source limits, a project over a limit is answered `429` with
`Retry-After` and its sender retries (Segment's libraries retry 429 with backoff); the
other projects are not touched. A call answered 429 was not received: it is not counted
in `received` (the retry is), exactly as a `429 queue_full` or a `503` is not.

The accounting lives in Redis, in the receiver's flush script (ingest/queue.py), so every
receiver sees the same counts and the check costs no round trip of its own:

- calls/s: a fixed one-second window, one hash per second (`ratelimit:<second>`, project
  id -> calls), kept two seconds. Fixed windows let a project send up to twice its limit
  across a window's edge; for a guard against a flood that is enough, and it is one
  HINCRBY per project and flush (a token bucket would need its state read and rewritten).
- queued: calls of the project in the ledger (queued, or in a worker's hands, until their
  batch is committed), counted up by the flush and down by the worker's settle script,
  both atomic with the ledger entry they follow, so the count cannot drift.

Whole requests only: a batch partly over the limit is refused whole (what Segment
answers: one status per request), and a single request larger than a limit is still taken
when its project has nothing counted against that limit (else a 2,500-call batch could
never pass a 1,000 calls/s limit).

These are the pure rules; the receiver (ingest/receiver.py) and the queue writer apply them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    """A project's limits; 0 is none."""

    rate: int = 0  # calls per second
    queued: int = 0  # calls received and not yet finished by a worker

    @property
    def any(self) -> bool:
        return self.rate > 0 or self.queued > 0


NO_LIMITS = Limits()

# Seconds a sender is told to wait. Calls/s: the window ends within the second. Queued:
# the workers take a queued limit's worth of calls in about a second when it is sized by
# docs/scaling.md's rule (Q <= capacity x p99); a longer wait leaves them idle once they
# caught up: `python -m bench.noisy` with 5 s stored a 20,000-call backfill under a
# 500-call limit at ~210 calls/s while the workers had room for more. A refused sender's
# retry within that second costs the receiver no Redis (it remembers the refusal).
RETRY_AFTER_RATE = 1
RETRY_AFTER_QUEUED = 1


class ProjectSettings(Protocol):
    @property
    def rate_limit(self) -> int | None: ...

    @property
    def queue_limit(self) -> int | None: ...


def limits_for(project: ProjectSettings, rate: int, queued: int) -> Limits:
    """The project's own limits where it has them (a column of `projects`, NULL: the
    deployment's KOALA_PROJECT_RATE_LIMIT / KOALA_PROJECT_QUEUE_LIMIT)."""
    return _limits(
        rate if project.rate_limit is None else project.rate_limit,
        queued if project.queue_limit is None else project.queue_limit,
    )


@functools.lru_cache(maxsize=256)
def _limits(rate: int, queued: int) -> Limits:
    """One object per pair of values: the receiver asks on every request."""
    return NO_LIMITS if rate == queued == 0 else Limits(rate, queued)


@dataclass(frozen=True, slots=True)
class Over:
    """A project the flush script found over a limit: which one, how many calls it may
    still send (now: this second, or below its queued limit), and whether it has nothing
    counted against that limit (then its first request is taken whatever its size)."""

    project_id: int
    which: str  # "rate" or "queued"
    left: int
    fresh: bool

    @property
    def retry_after(self) -> int:
        return RETRY_AFTER_RATE if self.which == "rate" else RETRY_AFTER_QUEUED

    def message(self, limits: Limits) -> str:
        if self.which == "rate":
            return (
                f"this project is over its limit of {limits.rate} calls per second:"
                f" retry after {self.retry_after} s"
            )
        return (
            f"this project has over {limits.queued} calls waiting for the workers:"
            f" retry after {self.retry_after} s"
        )


def parse_over(reply: list[object]) -> list[Over]:
    """The flush script's answer when it wrote nothing: {-1, id, which, left, fresh, ...}."""
    out = []
    for i in range(1, len(reply), 4):
        which = reply[i + 1]
        out.append(
            Over(
                project_id=int(reply[i]),  # type: ignore[call-overload]
                which=which.decode() if isinstance(which, bytes) else str(which),
                left=int(reply[i + 2]),  # type: ignore[call-overload]
                fresh=bool(int(reply[i + 3])),  # type: ignore[call-overload]
            )
        )
    return out


def admitted(sizes: list[int], over: Over) -> int:
    """How many of a project's requests in a flush (their calls, in arrival order) to keep
    when it is over a limit: the first ones that fit in what it may still send (the first
    whatever its size when nothing is counted yet). Always fewer than all of them, since the
    script found all of them over: a flush retried without the rest makes progress."""
    kept = total = 0
    for size in sizes:
        if total + size > over.left and not (over.fresh and kept == 0):
            break
        total += size
        kept += 1
    return min(kept, len(sizes) - 1)
