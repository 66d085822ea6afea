"""The console's machinery over HTTP (#15): sign-in, session cookie, CSRF, roles, the
overview. The pages in a real browser: tests/test_console_browser.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from conftest import Receiver, Servers, start_receiver

from ingest.config import Settings
from ingest.operations import tokens
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.store.projects import Project

TOKEN = "console-token"


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("console"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


def signed_in(rx: Receiver, token: str = TOKEN) -> httpx.Client:
    client = httpx.Client(base_url=rx.url, follow_redirects=False)
    answer = client.post("/console/login", data={"token": token, "next": "/console"})
    assert answer.status_code == 303, answer.text
    return client


def csrf_of(client: httpx.Client, path: str = "/console") -> str:
    page = client.get(path, headers={"Accept": "text/html"}).text
    marker = 'name="csrf" value="'
    return page.split(marker, 1)[1].split('"', 1)[0]


def test_a_wrong_token_is_refused_and_sets_no_cookie(rx: Receiver) -> None:
    answer = httpx.post(rx.url + "/console/login", data={"token": "nope"})
    assert answer.status_code == 401 and "not valid" in answer.text
    assert "set-cookie" not in answer.headers


def test_the_session_cookie_is_httponly_strict_and_holds_no_token(rx: Receiver) -> None:
    answer = httpx.post(rx.url + "/console/login", data={"token": TOKEN})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert TOKEN not in cookie and TOKEN not in answer.headers.get("location", "")


def test_a_page_without_a_session_sends_the_browser_to_sign_in(rx: Receiver) -> None:
    answer = httpx.get(rx.url + "/console", headers={"Accept": "text/html"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/login")


def test_the_overview_shows_each_project_reconciled(rx: Receiver, project: Project) -> None:
    client = signed_in(rx)
    page = client.get("/console", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert f'data-project="{project.name}"' in page.text and "accounted for" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_the_overview_streams_its_counts(rx: Receiver, project: Project) -> None:
    client = signed_in(rx)
    with client.stream("GET", "/console/overview/stream") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                assert project.name in line and '"queue_depth"' in line
                break


def test_a_post_without_the_csrf_token_is_refused(rx: Receiver) -> None:
    client = signed_in(rx)
    answer = client.post("/console/logout", data={})
    assert answer.status_code == 303  # signing out needs no token: it only ends the session
    client = signed_in(rx)
    for data in ({}, {"csrf": "wrong"}):
        refused = client.post(
            "/console/breaker/reset", data=data, headers={"Accept": "application/json"}
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "csrf")
    ok = client.post("/console/breaker/reset", data={"csrf": csrf_of(client)})
    assert ok.status_code == 303


def test_a_form_from_another_site_is_refused(rx: Receiver) -> None:
    client = signed_in(rx)
    refused = client.post(
        "/console/breaker/reset",
        data={"csrf": csrf_of(client)},
        headers={"Origin": "https://evil.example", "Accept": "application/json"},
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "cross_origin")


def test_revoking_the_token_ends_its_console_sessions(
    rx: Receiver, servers: Servers, db: psycopg.Connection
) -> None:
    settings = Settings(DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url)
    ops = Ops(db, settings, cli_actor())
    created = tokens.create(ops, "console-viewer", "viewer", None)
    client = signed_in(rx, created.token)
    assert client.get("/console", headers={"Accept": "text/html"}).status_code == 200
    tokens.revoke(ops, "console-viewer")
    assert client.get("/console", headers={"Accept": "text/html"}).status_code == 303
