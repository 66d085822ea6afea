"""The admin API's answers to bad parameters (issue #13): each of these was a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Receiver, Servers, start_receiver

from ingest.store.projects import Project

TOKEN = "input-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("admin-input"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


def call(rx: Receiver, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, rx.url + path, headers=AUTH, **kwargs)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/projects/{name}/dead-letters?reason=%00"),
        ("GET", "/admin/projects/{name}/dead-letters?status=a%00"),
        ("GET", "/admin/projects/{name}/profiles?anonymous_id=%00"),
        ("GET", "/admin/projects/{name}/profiles?email=a%00@b.co"),
        ("GET", "/admin/projects/a%00b/stats"),
        ("GET", "/admin/projects/{name}/rejections?x%00=1"),
        ("GET", "/admin/jobs?kind=%00"),
    ],
)
def test_a_nul_in_any_parameter_is_400(
    rx: Receiver, project: Project, method: str, path: str
) -> None:
    answer = call(rx, method, path.format(name=project.name))
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_text")
    assert set(answer.json()) == {"code", "message"}


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "a\x00"},
        {"since": "2026-01-01\x00"},
        {"ids": [1], "payload": {"type": "track", "event": "E\x00"}},
    ],
)
def test_a_nul_in_a_json_body_is_400(rx: Receiver, project: Project, body: dict[str, Any]) -> None:
    answer = call(rx, "POST", f"/admin/projects/{project.name}/dead-letters/replay", json=body)
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_text")


@pytest.mark.parametrize("limit", [-5, 0, "abc", [1], True, 10**30, 1.5])
def test_a_replay_limit_that_is_not_a_count_is_400(
    rx: Receiver, project: Project, limit: object
) -> None:
    answer = call(
        rx,
        "POST",
        f"/admin/projects/{project.name}/dead-letters/replay",
        json={"limit": limit, "dry_run": True, "all": True},
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
    assert answer.json()["message"].startswith("limit: ")


def test_a_replay_with_a_good_limit_still_answers(rx: Receiver, project: Project) -> None:
    answer = call(
        rx,
        "POST",
        f"/admin/projects/{project.name}/dead-letters/replay",
        json={"limit": 5, "dry_run": True, "all": True},
    )
    assert answer.json() == {
        "matched": 0,
        "replayed": 0,
        "dry_run": True,
        "preview": [],
        "last_id": None,
    }


@pytest.mark.parametrize("cursor", ["9223372036854775808", "1" * 40, "²", "-1", "x", "WyJqb2JzIl0"])
def test_a_cursor_this_api_did_not_give_is_400(rx: Receiver, cursor: str) -> None:
    answer = call(rx, "GET", "/admin/jobs", params={"cursor": cursor})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_cursor")


def test_a_cursor_of_another_list_is_400(rx: Receiver, project: Project) -> None:
    from ingest.operations import paging

    cursor = paging.encode("rejections", [5])
    answer = call(rx, "GET", "/admin/jobs", params={"cursor": cursor})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_cursor")


def test_the_largest_id_in_a_cursor_still_answers(rx: Receiver) -> None:
    from ingest.operations import paging

    answer = call(rx, "GET", "/admin/jobs", params={"cursor": paging.encode("jobs", [2**63 - 1])})
    assert answer.status_code == 200 and "items" in answer.json()


@pytest.mark.parametrize("limit", ["²", "0", "1001", "-1", "9" * 30])
def test_a_list_limit_out_of_range_is_400(rx: Receiver, project: Project, limit: str) -> None:
    answer = call(rx, "GET", f"/admin/projects/{project.name}/rejections", params={"limit": limit})
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_request")
    assert answer.json()["message"].startswith("limit: ")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/jobs/99999999999999999999",
        "/admin/jobs/²",
        "/admin/projects/{name}/dead-letters/9223372036854775808",
        "/admin/projects/{name}/profiles/99999999999999999999/events",
    ],
)
def test_an_id_out_of_range_is_404(rx: Receiver, project: Project, path: str) -> None:
    answer = call(rx, "GET", path.format(name=project.name))
    # not a number: no route matches (not_found); a number past bigint: no such thing
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found" or answer.json()["code"].startswith("unknown_")
