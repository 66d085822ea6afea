"""The dead-letter circuit breaker (ingest/breaker.py): read it, close it."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from ingest.breaker import Breaker
from ingest.operations.context import Ops


class BreakerState(BaseModel):
    open: bool
    reason: str | None = None
    opened_at: datetime | None = None
    until: datetime | None = None


def _breaker(ops: Ops) -> Breaker:
    return Breaker(ops.redis, ops.settings.redis_key_prefix, ops.settings.breaker_policy())


def state(ops: Ops) -> BreakerState:
    found = _breaker(ops).state()
    if not found:
        return BreakerState(open=False)
    return BreakerState(
        open=True,
        reason=found.get("reason"),
        opened_at=datetime.fromtimestamp(found["opened_at"], UTC) if "opened_at" in found else None,
        until=datetime.fromtimestamp(found["until"], UTC) if "until" in found else None,
    )


def reset(ops: Ops) -> BreakerState:
    """Close it now (after fixing the cause); it spans every project."""
    ops.actor.check_acts(None)
    was = state(ops)
    _breaker(ops).reset()
    ops.record("breaker.reset", None, {"was_open": was.open, "reason": was.reason}, None)
    return BreakerState(open=False)
