"""The live debugger: a project's most recent calls with what became of each (stored,
duplicate, rejected with its code, dead letter with its reason), read from the stream the
workers add to once per batch (ingest/debugger.py).

Not a list paged to its end but a tail: `after` (the `last` of a previous answer) gives
only the calls that arrived since. The stream keeps a project's newest
`ingest.debugger.CAPACITY` calls (at most `PER_BATCH` of one batch, problems first):
older calls are in the store (events, rejections, dead letters), not here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ingest import debugger
from ingest.debugger import Outcome
from ingest.operations.context import Ops

DEFAULT_LIMIT = 100


class DebuggedCall(BaseModel):
    id: str = Field(description="Its place in the stream: give it as `after`.")
    at: datetime = Field(description="When a worker finished it.")
    message_id: str | None
    type: str | None
    event: str | None = Field(description="A track's event, a page's or screen's name.")
    outcome: Outcome
    code: str | None = Field(
        description="Rejection code, dead letter reason, `conflicting` for a duplicate"
        " whose content differs from the stored call."
    )
    received_at: str | None
    source: str | None
    replay_of: int | None = Field(description="The dead letter this call replayed.")
    payload: str = Field(
        description=f"The call as received, JSON text cut to {debugger.PAYLOAD_BYTES} bytes."
    )
    truncated: bool


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str | None = Field(
        default=None,
        pattern=r"^\d{1,20}-\d{1,20}$",
        description="Only calls after this one (`last` of a previous answer).",
    )
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=debugger.CAPACITY)


class Recent(BaseModel):
    project: str
    calls: list[DebuggedCall] = Field(description="Oldest first.")
    last: str | None = Field(
        description="Give it as `after` to get only newer calls; null while none arrived."
    )
    capacity: int = Field(description="How many recent calls a project's stream keeps.")


def recent(ops: Ops, name: str, query: Query | None = None) -> Recent:
    """The newest `limit` calls, or, `after` a call, the next `limit` that followed it."""
    query = query or Query()
    project = ops.project(name)
    key = debugger.stream_key(ops.settings.redis_key_prefix, project.id)
    entries: list[Any]
    if query.after:
        entries = ops.redis.xrange(key, min="(" + query.after, max="+", count=query.limit) or []
    else:
        entries = list(reversed(ops.redis.xrevrange(key, count=query.limit) or []))
    calls = [_call(entry_id, fields) for entry_id, fields in entries]
    return Recent(
        project=project.name,
        calls=calls,
        last=calls[-1].id if calls else query.after,
        capacity=debugger.CAPACITY,
    )


def _call(entry_id: Any, fields: Any) -> DebuggedCall:
    sid = entry_id.decode()
    millis = int(sid.split("-")[0])
    return DebuggedCall(
        id=sid,
        at=datetime.fromtimestamp(millis / 1000, UTC),
        **orjson.loads(fields[b"c"]),
    )
