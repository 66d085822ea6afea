"""Delete and suppress on real PostgreSQL: for KOALA_SUPPRESS_DAYS after a deletion, later
calls naming its identifiers are refused as `suppressed` (counted, listed, no personal data
kept), in its project only; 0 turns it off, an old deletion no longer suppresses, and an
operator lifts one (audited), through the operation, the CLI and the admin API."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from conftest import (
    Servers,
    koala,
    queued,
    reconciled,
    start_receiver,
    start_worker,
    wait_for,
)

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.operations import deletions as ops_deletions
from ingest.operations.actor import Actor
from ingest.operations.context import Ops
from ingest.operations.errors import NotFound
from ingest.operations.stats import stats
from ingest.store import projects
from ingest.store.projects import Project
from workers.pipeline import BatchResult, process

SUPPRESSING = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS), suppress_days=30)
OFF = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS), suppress_days=0)
RECEIVED = "2026-11-23T12:00:00.000Z"
TOKEN = "kt_sup_" + secrets.token_hex(8)
_n = itertools.count()


def call(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"sup-{next(_n)}", "receivedAt": RECEIVED, **fields}


def run(
    db: psycopg.Connection, project: Project, *calls: dict[str, Any], rules: Rules = SUPPRESSING
) -> BatchResult:
    with db.transaction():
        request = queued(project.id, *calls, source="webhook", received_at=RECEIVED)
        return process(db, [request], rules)


def rejected(db: psycopg.Connection, project: Project) -> list[tuple[str, str]]:
    rows = db.execute(
        "SELECT code, payload FROM rejections WHERE project_id = %s ORDER BY id", (project.id,)
    ).fetchall()
    return [(str(c), str(p)) for c, p in rows]


@pytest.fixture
def ops(db: psycopg.Connection) -> Iterator[Ops]:
    context = Ops(db, Settings(), Actor("test:ann", "operator"))
    yield context
    context.close()


def test_later_calls_naming_a_deleted_user_are_suppressed_in_its_project_only(
    db: psycopg.Connection, project: Project
) -> None:
    other = projects.create(db, project.name + "-b")
    run(db, project, call("track", userId="ann", event="Viewed Pricing"))
    run(db, project, call("delete", userId="ann", email="ann@acme.com"))
    later = run(
        db,
        project,
        call("track", userId="ann", event="Came Back"),
        call("identify", userId="ann", traits={"plan": "pro"}),
        call("alias", previousId="ann", userId="ann-2"),
        call("track", userId="bob", event="Viewed Pricing"),
    )
    assert (later.total("rejected"), later.total("stored")) == (3, 1)
    found = rejected(db, project)
    assert [c for c, _ in found] == ["suppressed"] * 3
    assert all("ann" not in p for _, p in found)  # the person asked to be erased
    assert json.loads(found[0][1])["type"] == "track"
    # counted: received = stored + duplicates + rejected + ... holds in the counters
    row = db.execute(
        "SELECT stored, rejected FROM project_counters WHERE project_id = %s", (project.id,)
    ).fetchone()
    assert row == (3, 3)  # ann's first call, the delete, bob's; the three refused
    # another project's "ann" is another person
    assert run(db, other, call("track", userId="ann", event="E")).total("stored") == 1
    # a second delete of the same user is carried out, not suppressed
    assert run(db, project, call("delete", userId="ann")).total("deletions") == 1


def test_off_old_and_lifted_deletions_suppress_nothing(
    db: psycopg.Connection, project: Project, ops: Ops
) -> None:
    run(db, project, call("delete", userId="cy"))
    assert run(db, project, call("track", userId="cy", event="E"), rules=OFF).total("stored") == 1
    assert run(db, project, call("track", userId="cy", event="E")).total("rejected") == 1

    [listed] = ops_deletions.list_suppressions(ops, project.name, ops_deletions.Query()).items
    assert listed.identifiers == ["user_id:cy"]
    lifted = ops_deletions.lift(ops, project.name, listed.id)
    assert lifted.lifted_by == "test:ann"
    with pytest.raises(NotFound):
        ops_deletions.lift(ops, project.name, listed.id)
    assert ops_deletions.list_suppressions(ops, project.name, ops_deletions.Query()).items == []
    assert run(db, project, call("track", userId="cy", event="E")).total("stored") == 1
    audit = db.execute(
        "SELECT actor, action, selection FROM audit_log WHERE project_id = %s", (project.id,)
    ).fetchall()
    assert audit == [
        ("test:ann", "deletion.lift_suppression", {"deletion": listed.id, "identifiers": 1})
    ]

    run(db, project, call("delete", userId="dee"))
    db.execute(
        "UPDATE deletions SET deleted_at = now() - interval '31 days'"
        " WHERE project_id = %s AND identifiers = ARRAY['user_id:dee']",
        (project.id,),
    )
    assert run(db, project, call("track", userId="dee", event="E")).total("stored") == 1


def test_the_cli_lists_and_lifts_a_suppression(
    db: psycopg.Connection, project: Project, servers: Servers
) -> None:
    run(db, project, call("delete", userId="eve"))

    def cli(*args: str) -> Any:
        done = subprocess.run(
            koala("suppressions", project.name, "--json", *args),
            env=servers.env(), capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    [listed] = cli()["items"]
    assert listed["identifiers"] == ["user_id:eve"]
    assert cli("--lift", str(listed["id"]))["lifted_by"]
    assert cli()["items"] == []


def test_a_real_receiver_and_worker_suppress_reconcile_and_the_api_lifts(
    db: psycopg.Connection, servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rx = start_receiver(servers, tmp_path_factory.mktemp("rx"), ADMIN_TOKEN=TOKEN)
    worker = start_worker(servers, tmp_path_factory.mktemp("worker"))
    try:
        project = projects.create(db, f"sup-{secrets.token_hex(4)}", webhook_secret="whsec")
        hook = f"{rx.url}/webhooks/segment/{project.public_key}"
        track = f"{rx.url}/v1/track"
        auth = (project.public_key, "")

        def send(message_id: str, user: str) -> None:
            body = {"userId": user, "event": "Viewed", "messageId": message_id}
            assert httpx.post(track, json=body, auth=auth, timeout=10).status_code == 200

        reader = Ops(db, Settings(), Actor("test", "operator"))

        def settled(received: int) -> Any:
            def done() -> Any:
                s = stats(reader, project.name)
                ok = s.received == received and s.in_flight == 0 and reconciled(s.model_dump())
                return s if ok else None

            return wait_for(done, timeout=60, interval=0.3)

        send("t-1", "fay")
        settled(1)
        delete = orjson.dumps({"type": "delete", "userId": "fay", "messageId": "d-1"})
        signature = hmac.new(b"whsec", delete, hashlib.sha1).hexdigest()
        answer = httpx.post(hook, content=delete, headers={"X-Signature": signature}, timeout=10)
        assert answer.status_code == 200
        settled(2)
        send("t-2", "fay")
        send("t-3", "gus")
        found = settled(4)
        assert (found.stored, found.rejected) == (3, 1)  # t-1, the delete, gus; fay refused
        api = {"Authorization": f"Bearer {TOKEN}"}
        base = f"{rx.url}/admin/projects/{project.name}"
        listed = httpx.get(base + "/rejections", headers=api, timeout=10).json()["items"]
        assert [r["code"] for r in listed] == ["suppressed"]
        [held] = httpx.get(base + "/suppressions", headers=api, timeout=10).json()["items"]
        assert held["identifiers"] == ["user_id:fay"]
        lifted = httpx.post(f"{base}/suppressions/{held['id']}/lift", headers=api, timeout=10)
        assert lifted.status_code == 200 and lifted.json()["lifted_at"]
        again = httpx.post(f"{base}/suppressions/{held['id']}/lift", headers=api, timeout=10)
        assert again.status_code == 404
        send("t-4", "fay")  # taken again
        found = settled(5)
        assert (found.stored, found.rejected) == (4, 1)
        events = db.execute(
            "SELECT message_id FROM events WHERE project_id = %s ORDER BY message_id",
            (project.id,),
        ).fetchall()
        assert [e[0] for e in events] == ["t-3", "t-4"]  # t-1 erased, t-2 suppressed
    finally:
        worker.stop()
        rx.proc.stop()
