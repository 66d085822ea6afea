"""The benchmark's grown-store stage (bench/grown.py) at a small size: the fill writes a
project's history into every table a batch reads through an index, and the plans of a
batch's statements are taken in its own transaction and leave nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from conftest import Servers

from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.store.projects import Project

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import grown
from bench.scenario import generate


def test_the_fill_writes_history_and_plans_are_taken_without_storing_the_batch(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    rules = Rules.of(Settings(database_url=servers.database_url))
    sample = grown.request_of(generate(300, 30, seed=11, dup_share=0).batches[1], project.id)
    empty = grown.plans(servers.database_url, sample, rules)

    size = grown.Size.scaled(2_000)
    filled = grown.fill(servers.database_url, project.id, size, lambda _: None)
    counts = db.execute(
        "SELECT (SELECT count(*) FROM events WHERE project_id = %(p)s),"
        " (SELECT count(*) FROM profiles WHERE project_id = %(p)s),"
        " (SELECT count(*) FROM message_ids WHERE project_id = %(p)s),"
        " (SELECT count(*) FROM identities WHERE project_id = %(p)s AND kind = 'email'),"
        " (SELECT count(*) FROM profile_accounts WHERE project_id = %(p)s)",
        {"p": project.id},
    ).fetchone()
    assert counts == (2_000, 200, 2_000, 100, 100)
    assert filled["sizes"]["events"]["index_bytes"] > 0

    grown_plans = grown.plans(servers.database_url, sample, rules)
    statements = [p["statement"] for p in grown_plans]
    assert any(
        s.startswith("SELECT e->>0, e->>1, i.profile_id FROM json_array_elements")
        for s in statements
    )
    assert all(p["shape"] for p in grown_plans)
    assert grown.compare(grown_plans, grown_plans) == []
    assert len(grown.compare(empty, grown_plans)) <= len(grown_plans)
    # the sample batch was rolled back both times: nothing of it is stored
    stored = db.execute(
        "SELECT count(*) FROM events WHERE project_id = %s AND message_id LIKE 'plan-%%'",
        (project.id,),
    ).fetchone()
    assert stored == (0,)
