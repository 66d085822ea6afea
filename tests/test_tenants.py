"""Tenants kept apart (issue #13): a project's write key never writes into another project,
whatever endpoint or auth style carries it and however the keys in a request disagree, and
nothing a project sends reads or changes another project's data. Real receiver, worker,
PostgreSQL and Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from conftest import Proc, Receiver, Servers, start_receiver, wait_for

from ingest.store import projects
from ingest.store.projects import Project

TOKEN = "tenants-token"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("tenants"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def admin(rx: Receiver, path: str, **params: str) -> Any:
    answer = httpx.get(
        rx.url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def stats(rx: Receiver, project: Project) -> dict[str, Any]:
    out: dict[str, Any] = admin(rx, f"/admin/projects/{project.name}/stats")
    return out


def settled(rx: Receiver, project: Project, stored: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = stats(rx, project)
        return s if s["stored"] >= stored and s["in_flight"] == 0 else None

    out: dict[str, Any] = wait_for(done, timeout=60, interval=0.3)  # type: ignore[assignment]
    return out


def profile(rx: Receiver, project: Project, **lookup: str) -> dict[str, Any]:
    [found] = admin(rx, f"/admin/projects/{project.name}/profiles", **lookup)["profiles"]
    assert isinstance(found, dict)
    return found


def test_one_project_s_key_never_writes_into_or_changes_another_project(
    rx: Receiver, worker: Proc, db: psycopg.Connection
) -> None:
    tag = secrets.token_hex(3)
    mine = projects.create(db, f"tenant-a-{tag}", webhook_secret="secret-a")
    theirs = projects.create(db, f"tenant-b-{tag}", webhook_secret="secret-b")
    # the other project's visitor, identified, with a company
    seed = {
        "type": "identify",
        "userId": "u-1",
        "messageId": f"seed-{tag}",
        "traits": {"email": "ann@acme.com", "plan": "enterprise"},
    }
    assert (
        httpx.post(
            rx.url + "/v1/batch", json={"batch": [seed]}, headers=basic(theirs.public_key)
        ).status_code
        == 200
    )
    settled(rx, theirs, 1)
    before = profile(rx, theirs, email="ann@acme.com")
    theirs_before = stats(rx, theirs)

    # Project A sends everything it can, naming project B's key wherever a key can go.
    same_person = {"userId": "u-1", "traits": {"email": "ann@acme.com", "plan": "free"}}
    sends = [
        # Basic says A, the body says B: the header decides
        ("/v1/identify", {**same_person, "writeKey": theirs.public_key}, basic(mine.public_key)),
        # analytics.js style: key in the body only, A; an item names B
        (
            "/v1/b",
            {
                "writeKey": mine.public_key,
                "batch": [
                    {"type": "track", "event": "E", "userId": "u-1", "writeKey": theirs.public_key},
                    {"type": "alias", "previousId": "u-1", "userId": "u-2"},
                    {"type": "group", "groupId": "acme", "userId": "u-1", "traits": {"name": "X"}},
                ],
            },
            {},
        ),
        (
            "/v1/batch",
            {
                "batch": [{"type": "page", "userId": "u-1", "name": "P"}],
                "writeKey": theirs.public_key,
            },
            basic(mine.public_key),
        ),
        # Koala: the key is the path's, whatever the body says
        (
            f"/web/projects/{mine.public_key}/batch",
            {
                "email": "ann@acme.com",
                "writeKey": theirs.public_key,
                "events": [{"event": "K", "message_id": f"k-{tag}"}],
            },
            {},
        ),
    ]
    for path, body, headers in sends:
        answer = httpx.post(rx.url + path, json=body, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
    # B's key with a wrong-looking mix is refused, not redirected: Basic B-typo + body A
    refused = httpx.post(
        rx.url + "/v1/track",
        json={"event": "E", "userId": "u-1", "writeKey": mine.public_key},
        headers=basic("pk_nope"),
    )
    assert refused.status_code == 401
    # A's signed webhook deleting u-1 erases A's u-1 only
    delete = orjson.dumps({"type": "delete", "userId": "u-1", "messageId": f"del-{tag}"})
    signature = hmac.new(b"secret-a", delete, hashlib.sha1).hexdigest()
    # (a delete signed with B's secret on A's path is refused: the signature is A's to give)
    forged = hmac.new(b"secret-b", delete, hashlib.sha1).hexdigest()
    assert (
        httpx.post(
            rx.url + f"/webhooks/segment/{mine.public_key}",
            content=delete,
            headers={"X-Signature": forged},
        ).status_code
        == 401
    )

    settled(rx, mine, 6)
    assert (
        httpx.post(
            rx.url + f"/webhooks/segment/{mine.public_key}",
            content=delete,
            headers={"X-Signature": signature},
        ).status_code
        == 200
    )
    mine_after = settled(rx, mine, 7)

    # everything A sent is A's; B is exactly as it was
    assert mine_after["received"] == 7 and mine_after["rejected"] == 0
    theirs_after = stats(rx, theirs)
    assert {k: theirs_after[k] for k in ("received", "stored", "duplicates", "rejected")} == {
        k: theirs_before[k] for k in ("received", "stored", "duplicates", "rejected")
    }
    after = profile(rx, theirs, email="ann@acme.com")
    assert after == before
    assert after["traits"]["plan"] == "enterprise" and after["event_count"] == 1
    rows = db.execute("SELECT count(*) FROM events WHERE project_id = %s", (theirs.id,)).fetchone()
    assert rows == (1,)
    # and A's own erasure went through in A: nothing of u-1 is left there
    erased = admin(rx, f"/admin/projects/{mine.name}/profiles", user_id="u-1")
    assert erased["profiles"] == []
