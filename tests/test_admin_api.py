"""The typed admin API (#15): explicit selections, one cursor scheme to the end of every
list, JSON errors, roles enforced on the server, an audit record of every action."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from conftest import Receiver, Servers, queued, start_receiver

from ingest.config import Settings
from ingest.operations import tokens
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.store import projects
from ingest.store.projects import Project

TOKEN = "api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("admin-api"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


def call(rx: Receiver, method: str, path: str, token: str = TOKEN, **kw: Any) -> httpx.Response:
    return httpx.request(method, rx.url + path, headers={"Authorization": f"Bearer {token}"}, **kw)


def letters(db: psycopg.Connection, project: Project, n: int) -> list[int]:
    """`n` pending dead letters in the project, as a worker would leave them."""
    from workers.failure.isolation import dead_letter_all

    calls = [{"type": "track", "event": "E", "anonymousId": "a", "messageId": f"m-{i}"}
             for i in range(n)]  # fmt: skip
    with db.transaction():
        dead_letter_all(db, [queued(project.id, *calls)], "invalid_event",
                        ValueError("bad"))  # fmt: skip
    rows = db.execute(
        "SELECT id FROM dead_letters WHERE project_id = %s ORDER BY id", (project.id,)
    ).fetchall()
    return [int(r[0]) for r in rows]


def make_token(db: psycopg.Connection, servers: Servers, role: str, *only: Project) -> str:
    settings = Settings(DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url)
    ops = Ops(db, settings, cli_actor())
    name = f"t-{role}-{len(only)}-{id(only)}"
    created = tokens.create(ops, name, role, [p.name for p in only] or None)
    return created.token


@pytest.mark.parametrize(
    "body",
    [{}, {"id": 5}, {"ids": []}, {"dry_run": True}, {"all": True, "ids": [1]}],
    ids=["empty", "typo-id", "no-ids", "dry-run-alone", "all-and-ids"],
)
def test_a_replay_without_an_explicit_selection_is_400_and_replays_nothing(
    rx: Receiver, project: Project, db: psycopg.Connection, body: dict[str, Any]
) -> None:
    ids = letters(db, project, 3)
    answer = call(rx, "POST", f"/admin/projects/{project.name}/dead-letters/replay", json=body)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
    assert set(answer.json()) == {"code", "message"}
    if body == {"id": 5}:
        assert "id: unknown field" in answer.json()["message"]
    pending = db.execute(
        "SELECT count(*) FROM dead_letters WHERE id = ANY(%s) AND status = 'pending'", (ids,)
    ).fetchone()
    assert pending == (3,)


def test_an_empty_body_is_400(rx: Receiver, project: Project) -> None:
    answer = httpx.post(
        rx.url + f"/admin/projects/{project.name}/dead-letters/replay", headers=AUTH
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_json")


def test_the_dry_run_says_what_would_be_replayed_and_claims_nothing(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    ids = letters(db, project, 3)
    base = f"/admin/projects/{project.name}/dead-letters/replay"
    answer = call(rx, "POST", base, json={"all": True, "dry_run": True}).json()
    assert (answer["matched"], answer["replayed"]) == (3, 0)
    assert [p["id"] for p in answer["preview"]] == ids
    assert db.execute(
        "SELECT count(*) FROM dead_letters WHERE project_id = %s AND status = 'pending'",
        (project.id,),
    ).fetchone() == (3,)


def test_a_discard_confirmed_after_a_dry_run_takes_only_the_letters_it_counted(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    ids = letters(db, project, 3)
    base = f"/admin/projects/{project.name}/dead-letters"
    dry = call(rx, "POST", base + "/replay", json={"all": True, "dry_run": True}).json()
    assert (dry["matched"], dry["last_id"]) == (3, ids[-1])
    later = letters(db, project, 2)[3:]  # failed after the operator saw the count
    done = call(rx, "POST", base + "/discard", json={"all": True, "up_to_id": dry["last_id"]})
    assert done.json() == {"count": 3}
    pending = db.execute(
        "SELECT id FROM dead_letters WHERE project_id = %s AND status = 'pending' ORDER BY id",
        (project.id,),
    ).fetchall()
    assert [r[0] for r in pending] == later


def test_an_unknown_query_parameter_is_400_naming_it(rx: Receiver, project: Project) -> None:
    answer = call(rx, "GET", f"/admin/projects/{project.name}/dead-letters", params={"reson": "x"})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
    assert answer.json()["message"] == "reson: unknown field"


def test_every_list_pages_to_the_end_with_one_cursor_scheme(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    ids = letters(db, project, 7)
    with db.transaction():
        for i in range(5):
            db.execute(
                "INSERT INTO rejections (project_id, received_at, source, item_index, code,"
                " message, payload) VALUES (%s, now(), 'segment', %s, 'invalid_event', 'x', '{}')",
                (project.id, i),
            )

    def walk(path: str) -> list[int]:
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = call(rx, "GET", path, params=params).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            cursor = page["next"]
            if cursor is None:
                return seen

    base = f"/admin/projects/{project.name}"
    assert walk(base + "/dead-letters") == ids
    assert len(walk(base + "/rejections")) == 5
    assert walk(base + "/deletions") == []


def test_a_viewer_reads_and_cannot_act(
    rx: Receiver, servers: Servers, project: Project, db: psycopg.Connection
) -> None:
    letters(db, project, 1)
    viewer = make_token(db, servers, "viewer")
    base = f"/admin/projects/{project.name}"
    assert call(rx, "GET", base + "/stats", token=viewer).status_code == 200
    refused = call(rx, "POST", base + "/dead-letters/replay", token=viewer, json={"all": True})
    assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    assert call(rx, "POST", "/admin/breaker/reset", token=viewer).status_code == 403
    assert call(rx, "POST", "/admin/tokens", token=viewer,
                json={"name": "x", "role": "operator"}).status_code == 403  # fmt: skip


def test_a_token_of_project_a_sees_nothing_of_project_b(
    rx: Receiver, servers: Servers, project: Project, db: psycopg.Connection
) -> None:
    other = projects.create(db, f"b-{project.name}")
    letters(db, other, 1)
    mine = make_token(db, servers, "operator", project)
    assert call(rx, "GET", f"/admin/projects/{project.name}/stats", token=mine).status_code == 200
    for method, path, body in [
        ("GET", f"/admin/projects/{other.name}/stats", None),
        ("GET", f"/admin/projects/{other.name}/dead-letters", None),
        ("POST", f"/admin/projects/{other.name}/dead-letters/replay", {"all": True}),
    ]:
        answer = call(rx, method, path, token=mine, json=body)
        assert (answer.status_code, answer.json()["code"]) == (404, "unknown_project")


def test_a_replay_is_in_the_audit_log_with_who_what_and_how_many(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    ids = letters(db, project, 2)
    base = f"/admin/projects/{project.name}/dead-letters"
    done = call(rx, "POST", base + "/replay", json={"ids": ids}).json()
    assert done["replayed"] == 2
    entries = call(rx, "GET", "/admin/audit", params={"project": project.name}).json()["items"]
    [entry] = [e for e in entries if e["action"] == "dead_letters.replay"]
    assert (entry["actor"], entry["count"], entry["selection"]["ids"]) == ("admin-token", 2, ids)


def test_a_wrong_token_and_no_token_are_401_json(rx: Receiver, project: Project) -> None:
    for headers in ({}, {"Authorization": "Bearer kt_nope"}, {"Authorization": "Basic eDp5"}):
        answer = httpx.get(rx.url + f"/admin/projects/{project.name}/stats", headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_token")


def test_unknown_paths_and_methods_answer_json(rx: Receiver) -> None:
    missing = call(rx, "GET", "/admin/nothing-here")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong = call(rx, "PATCH", "/admin/jobs")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "method_not_allowed")


def test_docs_are_served_without_internet(rx: Receiver) -> None:
    page = httpx.get(rx.url + "/docs")
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "http" not in page.text.split("<body>")[1]  # no script or style from elsewhere
    bundle = httpx.get(rx.url + "/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


def test_postgresql_unreachable_is_503_with_retry_after(servers: Servers) -> None:
    from starlette.testclient import TestClient

    from ingest.receiver import create_app

    settings = Settings(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
        REDIS_URL=servers.redis_url,
        ADMIN_TOKEN=TOKEN,
    )
    app = create_app(settings)
    with TestClient(app.app, raise_server_exceptions=False) as client:
        answer = client.get("/admin/jobs", headers=AUTH)
    assert (answer.status_code, answer.json()["code"]) == (503, "database_unavailable")
    assert answer.headers["retry-after"] == "5"


def test_company_domains_are_set_by_put_and_shown_with_the_project(
    rx: Receiver, project: Project
) -> None:
    path = f"/admin/projects/{project.name}/company-domains"
    answer = call(rx, "PUT", path, json={"free": ["isp.example"], "work": ["Bücher.de"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["company_free_domains"] == ["isp.example"]
    assert answer.json()["company_work_domains"] == ["xn--bcher-kva.de"]
    shown = call(rx, "GET", f"/admin/projects/{project.name}").json()
    assert (shown["company_free_domains"], shown["company_work_domains"]) == (
        ["isp.example"], ["xn--bcher-kva.de"],
    )  # fmt: skip
    bad = call(rx, "PUT", path, json={"free": ["no domain"], "work": []})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_domain")
    assert call(rx, "PUT", path, json={"free": []}).status_code == 400  # both lists, always
    gone = call(rx, "PUT", "/admin/projects/nope-x/company-domains", json={"free": [], "work": []})
    assert (gone.status_code, gone.json()["code"]) == (404, "unknown_project")


def test_companies_rank_by_activity_and_signal_and_show_one_to_a_viewer_of_the_project(
    rx: Receiver, servers: Servers, project: Project, db: psycopg.Connection
) -> None:
    from test_activity import two_companies

    acme, globex = two_companies(db, project)
    other = projects.create(db, f"c-{project.name}")
    viewer = make_token(db, servers, "viewer", project)
    base = f"/admin/projects/{project.name}/companies"
    window = {"since": "2026-11-10", "until": "2026-11-12"}

    answer = call(rx, "GET", base, token=viewer, params={**window, "limit": 1})
    assert answer.status_code == 200, answer.text
    first = answer.json()
    assert [c["company"]["id"] for c in first["items"]] == [globex]
    assert first["signals"] == ["demo", "docs", "pricing"]
    rest = call(rx, "GET", base, token=viewer, params={**window, "cursor": first["next"]}).json()
    assert [c["company"]["id"] for c in rest["items"]] == [acme] and rest["next"] is None
    by_pricing = call(rx, "GET", base, token=viewer,
                      params={**window, "rank": "signal:pricing"}).json()  # fmt: skip
    assert [(c["company"]["domain"], c["value"]) for c in by_pricing["items"]] == [("acme.com", 1)]
    shown = call(rx, "GET", f"{base}/{acme}", token=viewer, params=window).json()
    assert (shown["totals"]["visitors"], shown["totals"]["identified"]) == (2, 2)
    assert [d["day"] for d in shown["days"]] == ["2026-11-11", "2026-11-10"]
    assert shown["days"][1]["top_paths"] == [{"path": "/pricing", "views": 1}]
    assert {v["email"] for v in shown["visitors"]} == {"ann@acme.com", "bob@acme.com"}
    assert [v["path"] for v in shown["recent_page_views"]] == ["/docs", "/pricing"]

    for params, code in [
        ({"rank": "signal:nope"}, "unknown_signal"),
        ({"rank": "loudest"}, "invalid_request"),
        ({"since": "2026-11-12", "until": "2026-11-10"}, "invalid_request"),
    ]:
        refused = call(rx, "GET", base, token=viewer, params=params)
        assert (refused.status_code, refused.json()["code"]) == (400, code), refused.text
        assert refused.json()["message"]
    missing = call(rx, "GET", f"{base}/999999999", token=viewer)
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_company")
    # another project's company is not found through this one, nor that project at all
    theirs = call(rx, "GET", f"/admin/projects/{other.name}/companies/{acme}")
    assert (theirs.status_code, theirs.json()["code"]) == (404, "unknown_company")
    hidden = call(rx, "GET", f"/admin/projects/{other.name}/companies", token=viewer)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "unknown_project")
