"""API tokens with roles (ingest/operations/tokens.py) and the audit log's listing
(ingest/operations/audit.py), on real PostgreSQL; the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Servers, koala
from pydantic import SecretStr

from ingest.config import Settings, load
from ingest.operations import audit, tokens
from ingest.operations.actor import ADMIN_TOKEN_ACTOR, Actor
from ingest.operations.context import Ops
from ingest.operations.errors import Conflict, Forbidden, Invalid, NotFound
from ingest.store import projects

ADMIN_TOKEN = "admin-" + secrets.token_hex(16)
ROOT = Actor("cli:test", "operator")


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return load().model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)})


@pytest.fixture
def ops(db: psycopg.Connection, settings: Settings) -> Iterator[Ops]:
    context = Ops(db, settings, ROOT)
    yield context
    context.close()


def as_actor(ops: Ops, actor: Actor) -> Ops:
    return Ops(ops.conn, ops.settings, actor)


def name(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def new_project(db: psycopg.Connection) -> projects.Project:
    return projects.create(db, name("p"))


def test_only_the_hash_of_a_token_is_stored(ops: Ops, db: psycopg.Connection) -> None:
    created = tokens.create(ops, name(), "viewer", None)
    assert created.token.startswith("kt_") and len(created.token) > 40
    rows = db.execute(
        "SELECT token_hash FROM api_tokens WHERE name = %s", (created.name,)
    ).fetchall()
    assert rows == [(hashlib.sha256(created.token.encode()).digest(),)]
    whole_row = str(
        db.execute("SELECT * FROM api_tokens WHERE name = %s", (created.name,)).fetchall()
    )
    assert created.token not in whole_row
    assert created.token[3:] not in whole_row


def test_the_admin_token_authenticates_as_the_bootstrap_operator(
    ops: Ops, settings: Settings
) -> None:
    actor = tokens.authenticate(ops.conn, settings, f"Bearer {ADMIN_TOKEN}")
    assert actor == ADMIN_TOKEN_ACTOR
    assert actor.can_act and actor.everywhere
    assert tokens.authenticate(ops.conn, settings, f"bearer  {ADMIN_TOKEN} ") == actor


def test_without_admin_token_set_no_bearer_value_is_the_admin(ops: Ops, settings: Settings) -> None:
    unset = settings.model_copy(update={"admin_token": None})
    assert tokens.authenticate(ops.conn, unset, f"Bearer {ADMIN_TOKEN}") is None
    assert tokens.authenticate(ops.conn, unset, "Bearer ") is None


def test_a_viewer_token_authenticates_as_a_viewer_of_every_project(
    ops: Ops, settings: Settings, db: psycopg.Connection
) -> None:
    created = tokens.create(ops, name("viewer"), "viewer", None)
    actor = tokens.authenticate(db, settings, f"Bearer {created.token}")
    assert actor == Actor(f"token:{created.name}", "viewer", None)
    assert not actor.can_act


def test_a_limited_operator_token_authenticates_limited_to_its_projects(
    ops: Ops, settings: Settings, db: psycopg.Connection
) -> None:
    a, b, other = new_project(db), new_project(db), new_project(db)
    created = tokens.create(ops, name("op"), "operator", [a.name, b.name, a.name])
    assert sorted(created.projects or []) == sorted([a.name, b.name])
    actor = tokens.authenticate(db, settings, f"Bearer {created.token}")
    assert actor == Actor(f"token:{created.name}", "operator", frozenset({a.id, b.id}))
    actor.check_acts(a.id)
    with pytest.raises(Forbidden):
        actor.check_acts(other.id)
    with pytest.raises(NotFound):
        as_actor(ops, actor).project(other.name)


def test_authenticating_marks_the_token_used_at_most_once_a_minute(
    ops: Ops, settings: Settings, db: psycopg.Connection
) -> None:
    created = tokens.create(ops, name(), "viewer", None)
    assert created.last_used_at is None
    tokens.authenticate(db, settings, f"Bearer {created.token}")
    first = db.execute(
        "SELECT last_used_at FROM api_tokens WHERE id = %s", (created.id,)
    ).fetchone()
    assert first is not None and first[0] is not None
    tokens.authenticate(db, settings, f"Bearer {created.token}")
    again = db.execute(
        "SELECT last_used_at FROM api_tokens WHERE id = %s", (created.id,)
    ).fetchone()
    assert again == first


def test_a_revoked_token_authenticates_no_one(
    ops: Ops, settings: Settings, db: psycopg.Connection
) -> None:
    created = tokens.create(ops, name(), "operator", None)
    assert tokens.authenticate(db, settings, f"Bearer {created.token}") is not None
    revoked = tokens.revoke(ops, created.name)
    assert revoked.revoked_at is not None
    assert tokens.authenticate(db, settings, f"Bearer {created.token}") is None


def test_a_wrong_or_malformed_token_authenticates_no_one(
    ops: Ops, settings: Settings, db: psycopg.Connection
) -> None:
    created = tokens.create(ops, name(), "operator", None)
    for header in (
        None,
        "",
        "Bearer",
        f"Bearer {created.token[:-1]}",
        "Bearer kt_" + secrets.token_urlsafe(32),
        f"Basic {created.token}",
        f"Bearer {ADMIN_TOKEN}x",
        created.token,
    ):
        assert tokens.authenticate(db, settings, header) is None, header


def test_a_viewer_can_neither_create_nor_revoke_tokens(ops: Ops) -> None:
    existing = tokens.create(ops, name(), "viewer", None)
    viewer = as_actor(ops, Actor("token:v", "viewer"))
    with pytest.raises(Forbidden):
        tokens.create(viewer, name(), "viewer", None)
    with pytest.raises(Forbidden):
        tokens.revoke(viewer, existing.name)
    assert existing.name in {t.name for t in all_tokens(ops)}


def test_a_limited_operator_cannot_mint_tokens_even_for_its_own_project(
    ops: Ops, db: psycopg.Connection
) -> None:
    project = new_project(db)
    limited = as_actor(ops, Actor("token:lim", "operator", frozenset({project.id})))
    with pytest.raises(Forbidden):
        tokens.create(limited, name(), "viewer", [project.name])
    with pytest.raises(Forbidden):
        tokens.list_tokens(limited, 10, None)


def test_create_refuses_a_bad_role_an_unknown_project_and_a_taken_name(
    ops: Ops, db: psycopg.Connection
) -> None:
    with pytest.raises(Invalid):
        tokens.create(ops, name(), "admin", None)
    with pytest.raises(Invalid):
        tokens.create(ops, "no spaces", "viewer", None)
    with pytest.raises(Invalid):
        tokens.create(ops, name(), "viewer", [])
    with pytest.raises(NotFound):
        tokens.create(ops, name(), "viewer", [name("missing")])
    taken = tokens.create(ops, name(), "viewer", None)
    with pytest.raises(Conflict):
        tokens.create(ops, taken.name, "operator", None)
    tokens.revoke(ops, taken.name)
    assert tokens.create(ops, taken.name, "operator", None).role == "operator"
    with pytest.raises(NotFound):
        tokens.revoke(ops, name("missing"))


def test_token_changes_are_audited_with_who_and_never_the_secret(
    ops: Ops, db: psycopg.Connection
) -> None:
    project = new_project(db)
    admin = as_actor(ops, ADMIN_TOKEN_ACTOR)
    created = tokens.create(admin, name(), "operator", [project.name])
    tokens.revoke(ops, created.name)
    entries = [
        e
        for e in audit.list_entries(ops, 1000, None).items
        if e.selection.get("name") == created.name
    ]
    assert [(e.action, e.actor, e.project, e.count) for e in entries] == [
        ("token.revoke", ROOT.name, None, 1),
        ("token.create", ADMIN_TOKEN_ACTOR.name, None, 1),
    ]
    assert entries[0].selection == {
        "name": created.name,
        "role": "operator",
        "projects": [project.name],
    }
    assert created.token not in json.dumps([e.model_dump(mode="json") for e in entries])


def test_a_token_name_taken_is_refused_and_leaves_no_audit_entry(ops: Ops) -> None:
    taken = tokens.create(ops, name(), "viewer", None)
    with pytest.raises(Conflict):
        tokens.create(ops, taken.name, "viewer", None)
    created = [
        e
        for e in audit.list_entries(ops, 1000, None, action="token.create").items
        if e.selection.get("name") == taken.name
    ]
    assert len(created) == 1


def all_tokens(ops: Ops, include_revoked: bool = False) -> list[tokens.TokenInfo]:
    out, cursor = [], None
    while True:
        page = tokens.list_tokens(ops, 2, cursor, include_revoked)
        out.extend(page.items)
        if page.next is None:
            return out
        cursor = page.next


def test_tokens_list_pages_to_the_end_and_hides_revoked_unless_asked(ops: Ops) -> None:
    made = [tokens.create(ops, name("page"), "viewer", None) for _ in range(5)]
    tokens.revoke(ops, made[0].name)
    live = [t.name for t in all_tokens(ops)]
    assert [m.name for m in made[1:]] == [n for n in live if n in {m.name for m in made}]
    assert made[0].name not in live
    assert made[0].name in {t.name for t in all_tokens(ops, include_revoked=True)}
    assert "token" not in tokens.TokenInfo.model_fields


def test_audit_listing_pages_to_the_end_with_the_cursor(ops: Ops, db: psycopg.Connection) -> None:
    project = new_project(db)
    for i in range(7):
        ops.record("test.page", project, {"i": i}, i)
    seen, cursor, pages = [], None, 0
    while True:
        page = audit.list_entries(ops, 3, cursor, project_name=project.name)
        seen.extend(page.items)
        pages += 1
        if page.next is None:
            break
        cursor = page.next
    assert pages == 3
    assert [e.selection["i"] for e in seen] == [6, 5, 4, 3, 2, 1, 0]
    assert {(e.project, e.action, e.actor) for e in seen} == {
        (project.name, "test.page", ROOT.name)
    }
    with pytest.raises(Invalid):
        audit.list_entries(ops, 3, "not-a-cursor")
    other_kind = tokens.list_tokens(ops, 1, None).next
    if other_kind is not None:
        with pytest.raises(Invalid):
            audit.list_entries(ops, 3, other_kind)


def test_an_actor_limited_to_projects_sees_only_their_audit_entries(
    ops: Ops, db: psycopg.Connection
) -> None:
    mine, theirs = new_project(db), new_project(db)
    ops.record("test.scope", mine, {}, 1)
    ops.record("test.scope", theirs, {}, 2)
    ops.record("test.scope", None, {}, 3)
    limited = as_actor(ops, Actor("token:lim", "viewer", frozenset({mine.id})))
    seen = audit.list_entries(limited, 1000, None, action="test.scope").items
    assert [(e.project, e.count) for e in seen] == [(mine.name, 1)]
    with pytest.raises(NotFound):
        audit.list_entries(limited, 10, None, project_name=theirs.name)
    everything = audit.list_entries(ops, 1000, None, action="test.scope").items
    assert {(e.project, e.count) for e in everything} >= {
        (mine.name, 1),
        (theirs.name, 2),
        (None, 3),
    }


def run(servers: Servers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        koala(*args), env=servers.env(), capture_output=True, text=True, timeout=60
    )


def test_cli_tokens_create_prints_the_token_once_and_list_never_shows_it(
    servers: Servers, db: psycopg.Connection
) -> None:
    project = new_project(db)
    token_name = name("cli")
    done = run(
        servers, "tokens", "create", token_name, "--role", "operator", "--project", project.name
    )
    assert done.returncode == 0, done.stderr
    [secret] = [w for w in done.stdout.split() if w.startswith("kt_")]
    assert done.stdout.count(secret) == 1
    assert "not shown again" in done.stdout
    stored = db.execute(
        "SELECT token_hash, role, created_by FROM api_tokens WHERE name = %s", (token_name,)
    ).fetchone()
    assert stored is not None
    assert stored[:2] == (hashlib.sha256(secret.encode()).digest(), "operator")
    assert stored[2].startswith("cli:")

    listed = run(servers, "tokens", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    [row] = [t for t in json.loads(listed.stdout) if t["name"] == token_name]
    assert row["projects"] == [project.name] and "token" not in row
    assert secret not in run(servers, "tokens", "list").stdout

    assert run(servers, "tokens", "revoke", token_name).returncode == 0
    logged = run(servers, "audit", "--action", "token.revoke", "--json")
    assert logged.returncode == 0, logged.stderr
    assert token_name in {e["selection"]["name"] for e in json.loads(logged.stdout)["items"]}
    assert secret not in logged.stdout
    table = run(servers, "audit", "--limit", "5")
    assert table.returncode == 0, table.stderr
    assert "token.revoke" in table.stdout


def test_cli_tokens_create_refuses_an_unknown_role_and_project(servers: Servers) -> None:
    bad_role = run(servers, "tokens", "create", name(), "--role", "admin")
    assert bad_role.returncode != 0
    unknown = run(servers, "tokens", "create", name(), "--role", "viewer", "--project", name())
    assert unknown.returncode == 1
    assert "no project named" in unknown.stderr
