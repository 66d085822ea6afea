"""Projects as operations: create, list, rotate the key with a grace period, revoke, the
webhook secret and allowed origins; who may do it, the audit record, and the receiver
taking a rotated key's predecessor until its grace ends (and not after)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psycopg
import pytest
from conftest import (
    Proc,
    Receiver,
    Servers,
    koala,
    reconciled,
    start_receiver,
    start_worker,
    stored_per_message,
    wait_for,
)

from ingest.config import Settings
from ingest.operations import projects
from ingest.operations.actor import Actor
from ingest.operations.context import Ops
from ingest.operations.errors import Conflict, Forbidden, Invalid, NotFound
from ingest.operations.stats import stats

CACHE_SECONDS = 1.0
GRACE = 4
SECRET = "s3cret-" + secrets.token_hex(8)  # must never be read back from an answer or a log


def name(prefix: str = "p") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def ops(db: psycopg.Connection) -> Iterator[Ops]:
    context = Ops(db, Settings(), Actor("test:ann", "operator"))
    yield context
    context.close()


def as_actor(ops: Ops, actor: Actor) -> Ops:
    return Ops(ops.conn, ops.settings, actor)


# --- the receiver and a rotation -------------------------------------------------------


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(
        servers, tmp_path_factory.mktemp("rx"), KOALA_KEY_CACHE_SECONDS=str(CACHE_SECONDS)
    )
    yield started
    started.proc.stop()


@pytest.fixture(scope="module")
def worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(servers, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


class Sender:
    """Sends one track call a request; remembers the messageIds the receiver took."""

    def __init__(self, rx: Receiver) -> None:
        self.url = rx.url + "/v1/track"
        self.accepted: list[str] = []

    def send(self, key: str) -> int:
        message_id = f"rot-{secrets.token_hex(6)}"
        auth = base64.b64encode(f"{key}:".encode()).decode()
        answer = httpx.post(
            self.url,
            json={"userId": "u1", "event": "Rotated", "messageId": message_id},
            headers={"Authorization": f"Basic {auth}"},
            timeout=10,
        )
        if answer.status_code == 200:
            self.accepted.append(message_id)
        return answer.status_code


def test_after_a_rotation_both_keys_are_taken_until_the_grace_ends_then_only_the_new_one(
    ops: Ops, db: psycopg.Connection, rx: Receiver, worker: Proc
) -> None:
    created = projects.create(ops, name("rot"))
    sender = Sender(rx)
    old = created.public_key
    assert sender.send(old) == 200

    rotated = projects.rotate_key(ops, created.name, grace_seconds=GRACE)
    new = rotated.public_key
    assert rotated.previous_public_key == old != new
    assert rotated.previous_key_expires_at is not None
    assert sender.send(new) == 200  # a new key works at once (a cache miss reloads)
    time.sleep(CACHE_SECONDS * 1.5)  # reloaded: `old` is now the previous key, not current
    assert sender.send(old) == 200
    assert sender.send(new) == 200
    listed = projects.get(ops, created.name)
    assert (listed.public_key, listed.previous_public_key) == (new, old)

    # after the grace, the old key is refused as an unknown key, within the cache's time
    wait = (rotated.previous_key_expires_at - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, wait))
    refused_by = time.monotonic() + CACHE_SECONDS + 1.0
    while (status := sender.send(old)) == 200 and time.monotonic() < refused_by:
        time.sleep(0.1)
    assert status == 401
    assert sender.send(old) == 401
    assert sender.send(new) == 200
    listed = projects.get(ops, created.name)
    assert (listed.previous_public_key, listed.previous_key_expires_at) == (None, None)

    # every call the receiver took is stored once, and nothing else was received
    def settled() -> object:
        s = stats(ops, created.name)
        return s if s.in_flight == 0 and reconciled(s.model_dump()) else None

    found = wait_for(settled, timeout=60, interval=0.3)
    assert found.received == found.stored == len(sender.accepted)  # type: ignore[attr-defined]
    assert stored_per_message(db, created.id) == dict.fromkeys(sender.accepted, 1)


def test_a_second_rotation_retires_the_previous_key_at_once_and_a_grace_of_0_too(
    ops: Ops,
) -> None:
    created = projects.create(ops, name("twice"))
    first = projects.rotate_key(ops, created.name)  # default grace: the setting
    assert first.grace_seconds == ops.settings.key_rotation_grace_seconds == 86400
    second = projects.rotate_key(ops, created.name, grace_seconds=60)
    assert second.previous_public_key == first.public_key  # `created`'s key is gone
    now = projects.rotate_key(ops, created.name, grace_seconds=0)
    assert (now.previous_public_key, now.previous_key_expires_at) == (None, None)
    listed = projects.get(ops, created.name)
    assert listed.public_key == now.public_key and listed.previous_public_key is None
    with pytest.raises(Invalid) as error:
        projects.rotate_key(ops, created.name, grace_seconds=-1)
    assert error.value.code == "invalid_grace"


def test_a_revoked_project_refuses_its_previous_key_too(ops: Ops, rx: Receiver) -> None:
    created = projects.create(ops, name("revoked"))
    rotated = projects.rotate_key(ops, created.name, grace_seconds=600)
    sender = Sender(rx)
    assert sender.send(created.public_key) == 200
    projects.revoke(ops, created.name)
    refused_by = time.monotonic() + CACHE_SECONDS + 2.0
    while sender.send(created.public_key) != 401 and time.monotonic() < refused_by:
        time.sleep(0.1)
    assert sender.send(created.public_key) == 401
    assert sender.send(rotated.public_key) == 401
    with pytest.raises(NotFound):
        projects.rotate_key(ops, created.name)


def test_a_webhook_secret_set_is_required_by_the_receiver_and_cleared_is_not(
    ops: Ops, rx: Receiver
) -> None:
    created = projects.create(ops, name("hook"))
    url = f"{rx.url}/webhooks/segment/{created.public_key}"
    call = {"type": "track", "userId": "u1", "event": "Hooked", "messageId": "h-1"}
    assert httpx.post(url, json=call, timeout=10).status_code == 200
    info = projects.set_webhook_secret(ops, created.name, SECRET)
    assert info.has_webhook_secret and SECRET not in info.model_dump_json()
    wait_for(lambda: httpx.post(url, json=call, timeout=10).status_code == 401, timeout=5)
    projects.set_webhook_secret(ops, created.name, None)
    wait_for(lambda: httpx.post(url, json=call, timeout=10).status_code == 200, timeout=5)


# --- rules, audit, scope ------------------------------------------------------------------


def test_every_change_is_audited_with_its_actor_and_never_the_secret(
    ops: Ops, db: psycopg.Connection
) -> None:
    created = projects.create(
        ops, name("audit"), webhook_secret=SECRET, allowed_origins=["https://WWW.Acme.com"]
    )
    assert created.has_webhook_secret and SECRET not in created.model_dump_json()
    projects.rotate_key(ops, created.name, grace_seconds=30)
    projects.set_webhook_secret(ops, created.name, SECRET + "-2")
    projects.set_webhook_secret(ops, created.name, None)
    projects.set_allowed_origins(ops, created.name, ["https://*.acme.io"])
    projects.set_allowed_origins(ops, created.name, None)
    projects.revoke(ops, created.name)

    rows = db.execute(
        "SELECT actor, action, selection, count FROM audit_log WHERE project_id = %s ORDER BY id",
        (created.id,),
    ).fetchall()
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("test:ann", action, 1)
        for action in (
            "project.create",
            "project.rotate_key",
            "project.webhook_secret",
            "project.webhook_secret",
            "project.allowed_origins",
            "project.allowed_origins",
            "project.revoke",
        )
    ]
    selections = [r[2] for r in rows]
    assert selections[0] == {
        "webhook_secret": True,
        "allowed_origins": ["https://www.acme.com"],
        "accept": "all",
    }
    assert selections[1]["grace_seconds"] == 30 and selections[1]["previous_key_expires_at"]
    assert selections[2:4] == [{"set": True}, {"set": False}]
    assert selections[4:6] == [
        {"allowed_origins": ["https://*.acme.io"]},
        {"allowed_origins": None},
    ]
    assert "s3cret" not in json.dumps(selections)


def test_create_refuses_a_taken_name_a_bad_name_and_a_bad_origin(ops: Ops) -> None:
    created = projects.create(ops, name("taken"))
    with pytest.raises(Conflict) as taken:
        projects.create(ops, created.name)
    assert taken.value.code == "project_exists" and taken.value.status == 409
    for bad, code in [
        ("-dash-first", "invalid_name"),
        ("x" * 101, "invalid_name"),
        ("with space", "invalid_name"),
        ("ends-with-newline\n", "invalid_name"),
    ]:
        with pytest.raises(Invalid) as error:
            projects.create(ops, bad)
        assert error.value.code == code
    with pytest.raises(Invalid) as error:
        projects.create(ops, name("origin"), allowed_origins=["acme.com/pricing"])
    assert error.value.code == "invalid_origin"
    for origin in ("ftp://acme.com", "https://acme\x00.com", "https://ac me.com"):
        with pytest.raises(Invalid) as error:
            projects.set_allowed_origins(ops, created.name, [origin])
        assert error.value.code == "invalid_origin"
    with pytest.raises(Invalid) as error:
        projects.set_webhook_secret(ops, created.name, "nul\x00")
    assert error.value.code == "invalid_webhook_secret"
    with pytest.raises(Invalid) as error:
        projects.set_webhook_secret(ops, created.name, "")
    assert error.value.code == "invalid_webhook_secret"


def test_a_viewer_reads_but_cannot_act(ops: Ops) -> None:
    created = projects.create(ops, name("viewed"))
    viewer = as_actor(ops, Actor("token:vic", "viewer"))
    assert projects.get(viewer, created.name).name == created.name
    assert created.name in {p.name for p in _all(viewer)}
    for act in (
        lambda: projects.create(viewer, name("nope")),
        lambda: projects.rotate_key(viewer, created.name),
        lambda: projects.revoke(viewer, created.name),
        lambda: projects.set_webhook_secret(viewer, created.name, SECRET),
        lambda: projects.set_allowed_origins(viewer, created.name, None),
    ):
        with pytest.raises(Forbidden):
            act()
    assert projects.get(ops, created.name).public_key == created.public_key  # unchanged


def test_an_actor_limited_to_a_project_cannot_create_and_sees_nothing_of_the_others(
    ops: Ops,
) -> None:
    mine = projects.create(ops, name("mine"))
    theirs = projects.create(ops, name("theirs"))
    limited = as_actor(ops, Actor("token:lim", "operator", frozenset({mine.id})))
    assert [p.name for p in _all(limited)] == [mine.name]
    with pytest.raises(Forbidden):
        projects.create(limited, name("new"))
    for act in (
        lambda: projects.get(limited, theirs.name),
        lambda: projects.rotate_key(limited, theirs.name),
        lambda: projects.revoke(limited, theirs.name),
        lambda: projects.set_webhook_secret(limited, theirs.name, SECRET),
    ):
        with pytest.raises(NotFound):  # as a project that does not exist: no names leak
            act()
    assert projects.rotate_key(limited, mine.name, grace_seconds=0).public_key


def test_listing_pages_to_the_end_with_the_cursor(ops: Ops) -> None:
    made = [projects.create(ops, name("paged")).name for _ in range(5)]
    pages = 0
    seen: list[projects.ProjectInfo] = []
    cursor = None
    while True:
        page = projects.list_projects(ops, limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen.extend(page.items)
        pages += 1
        if page.next is None:
            break
        cursor = page.next
    ids = [p.id for p in seen]
    assert ids == sorted(set(ids))  # by id, none twice
    assert set(made) <= {p.name for p in seen}
    assert pages >= 3
    with pytest.raises(Invalid) as error:
        projects.list_projects(ops, cursor="not-a-cursor")
    assert error.value.code == "invalid_cursor"


def _all(ops: Ops) -> list[projects.ProjectInfo]:
    out: list[projects.ProjectInfo] = []
    cursor = None
    while True:
        page = projects.list_projects(ops, limit=1000, cursor=cursor)
        out.extend(page.items)
        if page.next is None:
            return out
        cursor = page.next


# --- the CLI -----------------------------------------------------------------------------


def run(servers: Servers, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        koala("projects", *args), env=servers.env(), input=stdin, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_cli_rotates_a_key_sets_and_clears_the_webhook_secret_and_audits_as_its_user(
    servers: Servers, db: psycopg.Connection
) -> None:
    project = name("cli")
    created = json.loads(run(servers, "create", project, "--json").stdout)
    done = run(servers, "rotate-key", project, "--grace-seconds", "120", "--json")
    assert done.returncode == 0, done.stderr
    rotated = json.loads(done.stdout)
    assert rotated["previous_public_key"] == created["public_key"] != rotated["public_key"]
    assert rotated["grace_seconds"] == 120

    listed = next(
        p for p in json.loads(run(servers, "list", "--json").stdout) if p["name"] == project
    )
    assert listed["public_key"] == rotated["public_key"]
    assert listed["previous_public_key"] == created["public_key"]
    assert listed["webhook_secret"] is listed["has_webhook_secret"] is False

    assert run(servers, "webhook-secret", project, SECRET).returncode == 0
    row = db.execute("SELECT webhook_secret FROM projects WHERE name = %s", (project,)).fetchone()
    assert row == (SECRET,)
    assert run(servers, "webhook-secret", project, "-", stdin=SECRET + "-2\n").returncode == 0
    row = db.execute("SELECT webhook_secret FROM projects WHERE name = %s", (project,)).fetchone()
    assert row == (SECRET + "-2",)
    neither = run(servers, "webhook-secret", project)
    assert neither.returncode == 1 and "--clear" in neither.stderr
    cleared = run(servers, "webhook-secret", project, "--clear")
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    row = db.execute("SELECT webhook_secret FROM projects WHERE name = %s", (project,)).fetchone()
    assert row == (None,)

    too_long = run(servers, "rotate-key", project, "--grace-seconds", str(31 * 86400))
    assert too_long.returncode == 2 and "grace" in too_long.stderr
    assert run(servers, "revoke", project).returncode == 0
    gone = run(servers, "rotate-key", project)
    assert gone.returncode == 1 and "no project" in gone.stderr

    actors = {
        r[0]
        for r in db.execute(
            "SELECT a.actor FROM audit_log a JOIN projects p ON p.id = a.project_id"
            " WHERE p.name = %s",
            (project,),
        )
    }
    assert len(actors) == 1 and actors.pop().startswith("cli:")
