"""The operator commands: projects."""

from __future__ import annotations

import json
import secrets
import subprocess

import psycopg
from conftest import Servers, koala


def run(servers: Servers, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        koala(*args), env=servers.env(), capture_output=True, text=True, timeout=60
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
