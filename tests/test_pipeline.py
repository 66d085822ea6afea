"""The thin path end to end, with real processes: HTTP -> Redis -> Celery worker -> row."""

from __future__ import annotations

import httpx
import psycopg
from conftest import Proc, Receiver, wait_for

from ingest.store.projects import Project


def _events(db: psycopg.Connection, project: Project) -> list[tuple[str, str, str]]:
    return db.execute(
        "SELECT message_id, type, event FROM events WHERE project_id = %s ORDER BY id",
        (project.id,),
    ).fetchall()


def test_track_call_with_basic_auth_becomes_an_event_row(
    receiver: Receiver, worker: Proc, db: psycopg.Connection, project: Project
) -> None:
    response = httpx.post(
        receiver.url + "/v1/track",
        auth=(project.public_key, ""),
        json={
            "userId": "u-1",
            "event": "Signed Up",
            "messageId": "m-1",
            "properties": {"plan": "pro"},
        },
    )
    assert response.status_code == 200
    assert response.json() == {"success": True}
    rows = wait_for(lambda: _events(db, project))
    assert rows == [("m-1", "track", "Signed Up")]


def test_same_message_id_sent_twice_is_stored_once_and_counted_as_duplicate(
    receiver: Receiver, worker: Proc, db: psycopg.Connection, project: Project
) -> None:
    call = {"userId": "u-2", "event": "Clicked", "messageId": "dup-1"}
    for _ in range(2):
        assert (
            httpx.post(
                receiver.url + "/v1/track", auth=(project.public_key, ""), json=call
            ).status_code
            == 200
        )

    def counters() -> tuple[int, int] | None:
        row = db.execute(
            "SELECT stored, duplicates FROM project_counters WHERE project_id = %s", (project.id,)
        ).fetchone()
        return row if row and row[0] + row[1] == 2 else None

    assert wait_for(counters) == (1, 1)
    assert _events(db, project) == [("dup-1", "track", "Clicked")]
