"""The thin path end to end, with real processes: HTTP -> Redis -> Celery worker -> row."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
from conftest import Proc, Receiver, Servers, start_receiver, wait_for

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


def test_workers_decode_task_bodies_with_orjson_and_read_what_every_producer_writes() -> None:
    """Workers swap kombu's JSON decoder for orjson (bench/README.md); the bodies Celery's
    own producer writes (retries, job tasks) and the receiver's both still decode."""
    import base64

    import orjson
    from kombu.serialization import dumps, loads, registry

    import workers.tasks  # noqa: F401  (registers the decoder, as a worker does at start)
    from ingest.queue import celery_message

    assert registry._decoders["application/json"] is orjson.loads
    requests = [{"project_id": 1, "received_at": "2026-11-23T00:00:00Z", "calls": [{"a": "é"}]}]
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    content_type, encoding, data = dumps([[requests], {}, embed], serializer="json")
    accept = {"application/json"}
    assert loads(data, content_type, encoding, accept=accept) == [[requests], {}, embed]
    body = base64.b64decode(orjson.loads(celery_message("ingest", requests))["body"])
    assert loads(body, "application/json", "utf-8", accept=accept) == [[requests], {}, embed]
    # a property shaped like a kombu type marker is data, kept as sent (kombu made it a Decimal)
    marker = {"__type__": "decimal", "__value__": "1.5"}
    marked = [{**requests[0], "calls": [{"properties": {"price": marker}}]}]
    body = base64.b64decode(orjson.loads(celery_message("ingest", marked))["body"])
    assert loads(body, "application/json", "utf-8", accept=accept)[0][0] == marked


def test_a_signed_webhook_delete_erases_the_person_through_receiver_and_worker(
    servers: Servers, worker: Proc, db: psycopg.Connection, tmp_path: Path
) -> None:
    import hashlib
    import hmac
    import secrets

    import orjson

    from ingest.store import projects

    receiver = start_receiver(servers, tmp_path, ADMIN_TOKEN="admin-t")
    project = projects.create(db, f"del-{secrets.token_hex(3)}", webhook_secret="whsec")
    call = {"userId": "erin", "event": "Viewed Pricing", "messageId": "erin-1"}
    assert (
        httpx.post(receiver.url + "/v1/track", auth=(project.public_key, ""), json=call).status_code
        == 200
    )
    assert wait_for(lambda: _events(db, project)) == [("erin-1", "track", "Viewed Pricing")]
    url = receiver.url + f"/webhooks/segment/{project.public_key}"
    body = orjson.dumps({"type": "delete", "userId": "erin", "messageId": "erin-delete"})
    forged = httpx.post(url, content=body, headers={"X-Signature": "0" * 40})
    assert forged.status_code == 401
    signature = hmac.new(b"whsec", body, hashlib.sha1).hexdigest()
    assert httpx.post(url, content=body, headers={"X-Signature": signature}).status_code == 200

    def erased() -> bool:
        left = db.execute(
            "SELECT (SELECT count(*) FROM events WHERE project_id = %(p)s)"
            " + (SELECT count(*) FROM profiles WHERE project_id = %(p)s),"
            " (SELECT count(*) FROM deletions WHERE project_id = %(p)s)",
            {"p": project.id},
        ).fetchone()
        return left == (0, 1)

    try:
        wait_for(erased)
        # the delete call counts as stored: received = stored + duplicates + ...
        assert db.execute(
            "SELECT stored, duplicates FROM project_counters WHERE project_id = %s",
            (project.id,),
        ).fetchone() == (2, 0)
        listed = httpx.get(
            receiver.url + f"/admin/projects/{project.name}/deletions",
            headers={"Authorization": "Bearer admin-t"},
        ).json()["items"]
        assert [(d["message_id"], d["identifiers"], d["events"]) for d in listed] == [
            ("erin-delete", ["user_id:erin"], 1)
        ]
    finally:
        receiver.proc.stop()
