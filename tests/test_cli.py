"""The operator commands: projects, reprocess, jobs."""

from __future__ import annotations

import json
import secrets
import subprocess

import psycopg
from conftest import Servers, koala, queued

from ingest.store.projects import Project


def run(servers: Servers, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        koala(*args), env=servers.env(**env), capture_output=True, text=True, timeout=60
    )


def test_projects_create_prints_a_json_object_with_name_and_key(
    servers: Servers, db: psycopg.Connection
) -> None:
    name = f"acme-{secrets.token_hex(3)}"
    done = run(servers, "projects", "create", name, "--webhook-secret", "s3cret", "--json")
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["name"] == name
    assert created["public_key"].startswith("pk_")
    row = db.execute(
        "SELECT public_key, webhook_secret FROM projects WHERE name = %s", (name,)
    ).fetchone()
    assert row == (created["public_key"], "s3cret")


def test_projects_create_refuses_a_duplicate_name(servers: Servers) -> None:
    name = f"dup-{secrets.token_hex(3)}"
    assert run(servers, "projects", "create", name).returncode == 0
    again = run(servers, "projects", "create", name)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_projects_list_shows_created_projects(servers: Servers) -> None:
    name = f"listed-{secrets.token_hex(3)}"
    run(servers, "projects", "create", name)
    listed = json.loads(run(servers, "projects", "list", "--json").stdout)
    assert name in {p["name"] for p in listed}


def test_projects_allowed_origins_are_set_normalized_listed_and_cleared(
    servers: Servers,
) -> None:
    name = f"origins-{secrets.token_hex(3)}"
    created = run(
        servers, "projects", "create", name, "--allowed-origin", "https://WWW.Acme.com:443/"
    )
    assert created.returncode == 0, created.stderr

    def listed() -> object:
        rows = json.loads(run(servers, "projects", "list", "--json").stdout)
        return next(p["allowed_origins"] for p in rows if p["name"] == name)

    assert listed() == ["https://www.acme.com"]
    done = run(servers, "projects", "origins", name, "https://*.acme.io", "http://localhost:3000")
    assert done.returncode == 0, done.stderr
    assert listed() == ["https://*.acme.io", "http://localhost:3000"]
    bad = run(servers, "projects", "origins", name, "acme.com/pricing")
    assert bad.returncode == 1 and "origin" in bad.stderr
    assert listed() == ["https://*.acme.io", "http://localhost:3000"]  # unchanged
    assert run(servers, "projects", "origins", name).returncode == 1  # neither list nor --any
    assert run(servers, "projects", "origins", name, "--any").returncode == 0
    assert listed() is None


def test_reprocess_applies_a_changed_rule_to_a_range_and_jobs_shows_the_run(
    servers: Servers, db: psycopg.Connection
) -> None:
    from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS
    from ingest.identifiers import Rules
    from ingest.store import projects
    from workers.pipeline import process

    project = projects.create(db, f"rp-{secrets.token_hex(3)}")
    calls = [
        {"type": "identify", "messageId": f"cli-{i}", "anonymousId": f"cli-a{i}",
         "traits": {"email": email}, "timestamp": "2026-11-10T10:00:00Z",
         "receivedAt": "2026-11-23T12:00:00Z"}
        for i, email in enumerate(("ann+a@acme.com", "ann+b@acme.com", "ann@acme.com"))
    ]  # fmt: skip
    request = queued(project.id, *calls, received_at="2026-11-23T12:00:00Z")
    with db.transaction():
        process(db, [request], Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS)))

    bad = run(servers, "reprocess", project.name, "--since", "yesterday", "--until", "2026-12-01")
    assert bad.returncode == 2 and "--since/--until" in bad.stderr
    done = run(servers, "reprocess", project.name, "--since", "2026-11-10", "--until",
               "2026-11-11", KOALA_EMAIL_STRIP_PLUS_TAGS="true")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "done: 3/3 done" in done.stdout and "merges 2" in done.stdout, done.stdout
    live = db.execute(
        "SELECT count(*) FROM profiles WHERE project_id = %s AND merged_into IS NULL",
        (project.id,),
    ).fetchone()
    assert live == (1,)

    job_id = int(done.stdout.split("job ", 2)[1].split()[0])
    listed = json.loads(run(servers, "jobs", "--kind", "reprocess", "--json").stdout)["items"]
    assert job_id in [j["id"] for j in listed]
    shown = json.loads(run(servers, "jobs", "show", str(job_id)).stdout)
    assert (shown["status"], shown["project"], shown["trigger"]) == ("done", project.name, "cli")
    assert run(servers, "jobs", "cancel", str(job_id)).stdout.strip().endswith("done")
    assert run(servers, "jobs", "show", "999999999").returncode == 1


def test_deletions_lists_what_each_delete_call_named_and_erased(
    servers: Servers, db: psycopg.Connection
) -> None:
    from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS
    from ingest.identifiers import Rules
    from ingest.store import projects
    from workers.pipeline import process

    project = projects.create(db, f"del-{secrets.token_hex(3)}", webhook_secret="s")
    stamp = "2026-11-23T12:00:00Z"
    calls = [
        {"type": "track", "event": "E", "userId": "fay", "messageId": "f-1", "receivedAt": stamp},
        {"type": "delete", "userId": "fay", "messageId": "f-2", "receivedAt": stamp},
    ]
    request = queued(project.id, *calls, source="webhook", received_at=stamp)
    with db.transaction():
        process(db, [request], Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS)))
    done = run(servers, "deletions", project.name, "--json")
    assert done.returncode == 0, done.stderr
    [listed] = json.loads(done.stdout)["items"]
    assert (listed["message_id"], listed["identifiers"], listed["events"]) == (
        "f-2", ["user_id:fay"], 1
    )  # fmt: skip
    table = run(servers, "deletions", project.name)
    assert "user_id:fay" in table.stdout


def test_overview_and_rejections_answer_what_the_api_answers(
    servers: Servers, project: Project, db: psycopg.Connection
) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO rejections (project_id, received_at, source, item_index, code, message,"
            " payload) VALUES (%s, now(), 'segment', 0, 'invalid_event', 'no event', '{}')",
            (project.id,),
        )
    seen = json.loads(run(servers, "overview", "--json").stdout)
    [mine] = [p for p in seen["projects"] if p["stats"]["project"] == project.name]
    assert mine["reconciled"] and len(mine["calls_per_minute"]) == 60
    listed = json.loads(run(servers, "rejections", project.name, "--json").stdout)
    assert [r["code"] for r in listed["items"]] == ["invalid_event"] and listed["next"] is None


def test_debugger_prints_each_recent_call_with_its_outcome(
    servers: Servers, project: Project
) -> None:
    import redis

    from ingest import debugger

    seen = [
        debugger.Seen(project.id, 0, "stored", None, {"type": "track", "event": "A",
                      "messageId": "m-1"}, None, "2026-11-30T00:00:00Z", "segment"),
        debugger.Seen(project.id, 1, "duplicate", None, {"type": "track", "event": "A",
                      "messageId": "m-1"}, None, "2026-11-30T00:00:00Z", "segment"),
    ]  # fmt: skip
    client = redis.Redis.from_url(servers.redis_url)
    pipe = client.pipeline()
    debugger.add(pipe, servers.prefix, seen)
    pipe.execute()
    client.close()
    done = run(servers, "debugger", project.name)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["stored", "duplicate"]
    assert all("m-1" in line for line in lines)
    missing = run(servers, "profile", project.name, "999999")
    assert missing.returncode == 1 and "no profile 999999" in missing.stderr
