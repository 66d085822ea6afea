"""The one message between receiver and workers (ingest/message.py): what the receiver
queues reads back the same on the workers' side, and so does a message of an earlier
version."""

from __future__ import annotations

import orjson

from ingest.message import QueuedRequest, message_id_of
from ingest.queue import chunk_requests
from ingest.wire import Rejection


def test_a_queued_request_survives_the_queue_as_it_was_sent() -> None:
    sent = QueuedRequest(
        project_id=7,
        source="koala",
        received_at="2026-11-30T10:00:00.000Z",
        calls=[{"event": "E", "message_id": "k-1"}],
        rejected=[Rejection(1, "missing_event", "m", "{}")],
        shared={"profile_id": "ko-1"},
    )
    [[wire]] = chunk_requests([sent], max_calls=100)
    assert "dead_letter_ids" not in wire  # receiver messages are as they always were
    assert QueuedRequest.from_wire(orjson.loads(orjson.dumps(wire))) == sent
    assert sent.received == 2 and not sent.is_replay and sent.replay_of() == [None]


def test_a_replay_names_the_letter_of_each_call_and_an_old_message_reads_back() -> None:
    replay = QueuedRequest(1, "segment", "2026-11-01T00:00:00Z", [{"messageId": "m"}],
                           dead_letter_ids=[42])  # fmt: skip
    assert QueuedRequest.from_wire(replay.to_wire()) == replay
    assert replay.is_replay and replay.replay_of() == [42]
    # a message queued before `source` and `rejected` were written
    old = QueuedRequest.from_wire({"project_id": 3, "received_at": "x", "calls": [{"a": 1}]})
    assert (old.source, old.rejected, old.shared, old.dead_letter_ids) == (
        "segment",
        [],
        None,
        None,
    )


def test_a_call_s_message_id_is_read_from_either_format() -> None:
    assert message_id_of({"messageId": "s-1"}) == "s-1"
    assert message_id_of({"message_id": "k-1"}) == "k-1"
    assert message_id_of({}) is None
