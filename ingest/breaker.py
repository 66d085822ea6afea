"""The dead-letter circuit breaker, and the cluster-wide worker counters, in Redis.

When more than `threshold` of the calls finished in the last `window` seconds became
dead letters (with at least `min_calls` of them), the cause is more likely a bad deploy
than bad data: the breaker opens for `cooldown` seconds. Workers then hold their batch
(unacknowledged, so nothing is lost) instead of draining the queue into dead letters,
the receiver's /readyz says why, and each worker logs it. When the cooldown ends the
workers try again (half-open); if calls still fail, it opens again. `koala-ingest
breaker reset` closes it at once.

Workers also count retries, dead letters by reason and replays in one Redis hash, so the
receiver's /metrics shows them for the whole cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis

BUCKET_SECONDS = 10


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: float
    min_calls: int
    window_seconds: int
    cooldown_seconds: int


def keys(prefix: str) -> dict[str, str]:
    return {
        "state": prefix + "breaker",
        "window": prefix + "breaker:window",
        "metrics": prefix + "metrics",
    }


class Breaker:
    def __init__(self, client: redis.Redis, prefix: str, policy: BreakerPolicy) -> None:
        self.client = client
        self.policy = policy
        self.keys = keys(prefix)

    def record(self, finished: int, dead: int, now: float | None = None) -> dict[str, Any] | None:
        """Count a batch's outcome; open the breaker (and return its state) if the recent
        share of dead letters is over the threshold."""
        if finished <= 0:
            return None
        now = time.time() if now is None else now
        bucket = int(now // BUCKET_SECONDS)
        first = bucket - self.policy.window_seconds // BUCKET_SECONDS + 1
        pipe = self.client.pipeline()
        pipe.hincrby(self.keys["window"], f"{bucket}:calls", finished)
        pipe.hincrby(self.keys["window"], f"{bucket}:dead", dead)
        pipe.expire(self.keys["window"], self.policy.window_seconds * 2)
        pipe.hgetall(self.keys["window"])
        window: dict[bytes, bytes] = pipe.execute()[-1]
        calls = dead_total = 0
        stale = []
        for field, value in window.items():
            b, kind = field.decode().split(":")
            if int(b) < first:
                stale.append(field)
            elif kind == "calls":
                calls += int(value)
            else:
                dead_total += int(value)
        if stale:
            self.client.hdel(self.keys["window"], *stale)
        share = dead_total / calls if calls else 0.0
        if calls >= self.policy.min_calls and share > self.policy.threshold:
            state = {
                "reason": f"{share:.0%} of the last {calls} calls became dead letters"
                f" (threshold {self.policy.threshold:.0%})",
                "opened_at": now,
                "until": now + self.policy.cooldown_seconds,
            }
            self.client.set(
                self.keys["state"], orjson.dumps(state), ex=self.policy.cooldown_seconds
            )
            self.client.delete(self.keys["window"])  # half-open starts from a clean window
            return state
        return None

    def state(self) -> dict[str, Any] | None:
        raw = self.client.get(self.keys["state"])
        return orjson.loads(raw) if raw else None

    def reset(self) -> bool:
        return bool(self.client.delete(self.keys["state"], self.keys["window"]))


def count(client: redis.Redis, prefix: str, counts: dict[str, int]) -> None:
    """Add to the cluster-wide worker counters (retries, dead letters by reason, ...)."""
    pipe = client.pipeline()
    if queue_counts(pipe, prefix, counts):
        pipe.execute()


def queue_counts(pipe: Any, prefix: str, counts: dict[str, int]) -> int:
    """Queue those increments on a pipeline the caller executes (with whatever else it
    carries); how many were queued."""
    counts = {k: v for k, v in counts.items() if v}
    for name, value in counts.items():
        pipe.hincrby(keys(prefix)["metrics"], name, value)
    return len(counts)
