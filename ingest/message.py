"""The one message between receiver and workers: a request's worth of calls for one project.

The receiver makes one per HTTP request (`ingest/receiver.py`), a replay one per dead letter
(`ingest/replay.py`); `to_wire` is what a queued Celery task carries (plain JSON), and the
workers read it back with `from_wire` (`workers/tasks.py`) before the pipeline sees it.
Messages queued by any earlier version read back the same: absent fields take their
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.wire import Rejection

Source = Literal["segment", "koala", "webhook"]


def message_id_of(call: dict[str, Any]) -> Any:
    """A call's idempotency key: `messageId` (Segment) or `message_id` (Koala's format)."""
    return call.get("messageId") or call.get("message_id")


@dataclass(slots=True)
class QueuedRequest:
    """One HTTP request's worth of calls for one project (or one replayed dead letter)."""

    project_id: int
    source: str  # a Source
    received_at: str  # ISO-8601, when the receiver took the request
    calls: list[dict[str, Any]]
    rejected: list[Rejection] = field(default_factory=list)
    # Koala's request-level fields (profile_id, email, traits, ip), for every call
    shared: dict[str, Any] | None = None
    # a replay: the dead letter each call replays (None for a fresh call); None: all fresh
    dead_letter_ids: list[int | None] | None = None

    @property
    def received(self) -> int:
        return len(self.calls) + len(self.rejected)

    @property
    def is_replay(self) -> bool:
        return bool(self.dead_letter_ids)

    def replay_of(self) -> list[int | None]:
        """The dead letter each call replays, call by call (None: a fresh call)."""
        if self.dead_letter_ids:
            return list(self.dead_letter_ids)
        return [None] * len(self.calls)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "project_id": self.project_id,
            "source": self.source,
            "received_at": self.received_at,
            "shared": self.shared,
            "calls": self.calls,
            "rejected": [
                {"index": r.index, "code": r.code, "message": r.message, "payload": r.payload}
                for r in self.rejected
            ],
        }
        if self.dead_letter_ids is not None:
            wire["dead_letter_ids"] = self.dead_letter_ids
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> QueuedRequest:
        return cls(
            project_id=int(wire["project_id"]),
            source=str(wire.get("source") or "segment"),
            received_at=str(wire["received_at"]),
            calls=list(wire.get("calls") or ()),
            rejected=[
                Rejection(r.get("index"), r["code"], r["message"], r["payload"])
                for r in wire.get("rejected") or ()
            ],
            shared=wire.get("shared"),
            dead_letter_ids=wire.get("dead_letter_ids") or None,
        )
