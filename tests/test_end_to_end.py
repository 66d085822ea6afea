"""The product promise, end to end: the official Segment client sends a realistic mix
through a real receiver to real workers (one of them SIGKILLed mid-load), and the admin
API shows exactly the expected visitors, events and counts."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import Receiver, Servers, start_receiver, start_worker, wait_for

from ingest.store import projects
from ingest.store.projects import Project

TOKEN = "test-admin-token"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
VISITORS = 400


@dataclass
class Script:
    """The calls to send, and what the store must show afterwards (our own model)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events_of: Counter[str] = field(default_factory=Counter)  # visitor -> unique calls
    duplicates: int = 0

    def add(self, visitor: str, method: str, **kwargs: Any) -> None:
        kwargs.setdefault("message_id", f"{method}-{len(self.calls)}")
        # a fixed timestamp, so a resend is the same call (a different one would be a
        # conflicting duplicate)
        kwargs.setdefault("timestamp", T0 + timedelta(seconds=len(self.calls)))
        self.calls.append((method, kwargs))
        self.events_of[visitor] += 1

    def resend(self, index: int) -> None:
        self.calls.append(self.calls[index])
        self.duplicates += 1


def build_script() -> Script:
    s = Script()
    for i in range(VISITORS):  # anonymous browsing, with the Koala cookie
        v = f"v{i}"
        for n in range(4):
            s.add(
                v,
                "track",
                anonymous_id=f"anon-{i}",
                event=f"Viewed {n}",
                properties={"profile_id": f"ko-{i}"},
            )
        s.add(
            v,
            "page",
            anonymous_id=f"anon-{i}",
            category="Docs",
            name="Pricing",
            properties={"url": "https://x.io/pricing", "profile_id": f"ko-{i}"},
        )
    for i in range(VISITORS):  # half identify later, some alias, some join a company
        v = f"v{i}"
        if i % 2 == 0:
            s.add(
                v,
                "identify",
                user_id=f"user-{i}",
                anonymous_id=f"anon-{i}",
                traits={"email": f"V{i}@Acme{i % 7}.com ", "plan": "pro"},
            )
            if i % 4 == 0:
                s.add(
                    v,
                    "group",
                    user_id=f"user-{i}",
                    group_id=f"acme{i % 7}",
                    traits={"name": f"Acme {i % 7}", "domain": f"acme{i % 7}.com"},
                )
        elif i % 10 == 1:
            s.add(v, "alias", previous_id=f"anon-{i}", user_id=f"user-{i}")
            s.add(v, "track", user_id=f"user-{i}", event="Logged In")
    for index in range(0, len(s.calls), 20):  # 5% retried with the same messageId
        s.resend(index)
    return s


def send(client: Any, method: str, kwargs: dict[str, Any]) -> None:
    getattr(client, method)(**kwargs)


@pytest.fixture(scope="module")
def e2e_receiver(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("e2e"), ADMIN_TOKEN=TOKEN)
    yield started
    started.proc.stop()


def admin(rx: Receiver, path: str, **params: Any) -> Any:
    response = httpx.get(rx.url + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_segment_client_mix_with_a_worker_killed_mid_load(
    servers: Servers, e2e_receiver: Receiver, db: psycopg.Connection, tmp_path: Path
) -> None:
    from segment.analytics import Client

    project = projects.create(db, f"e2e-{secrets.token_hex(3)}")
    script = build_script()
    errors: list[tuple[str, int]] = []
    rx = e2e_receiver
    victim = start_worker(
        servers,
        tmp_path,
        name="victim",
        concurrency=2,
        KOALA_VISIBILITY_TIMEOUT="8",
        KOALA_HEARTBEAT_SECONDS="1",
        KOALA_BREAKER_COOLDOWN_SECONDS="4",
        KOALA_WORKER_BATCH_MAX_CALLS="100",
    )
    client = Client(
        project.public_key,
        host=rx.url,
        upload_size=100,
        upload_interval=0.05,
        max_queue_size=100_000,
        max_retries=3,
        on_error=lambda error, batch: errors.append((repr(error), len(batch))),
    )
    survivor = None
    try:
        half = len(script.calls) // 2
        for method, kwargs in script.calls[:half]:
            send(client, method, kwargs)
        client.flush()

        def stored() -> int:
            return int(admin(rx, f"/admin/projects/{project.name}/stats")["stored"])

        wait_for(lambda: stored() > 100, timeout=60, interval=0.05)
        victim.kill_pool()
        for method, kwargs in script.calls[half:]:
            send(client, method, kwargs)
        client.flush()
        survivor = start_worker(
            servers,
            tmp_path,
            name="survivor",
            concurrency=2,
            KOALA_VISIBILITY_TIMEOUT="8",
            KOALA_HEARTBEAT_SECONDS="1",
            KOALA_BREAKER_COOLDOWN_SECONDS="4",
        )

        def settled() -> dict[str, Any] | None:
            s = admin(rx, f"/admin/projects/{project.name}/stats")
            return s if s["in_flight"] == 0 and s["received"] >= len(script.calls) else None

        try:
            stats = wait_for(settled, timeout=120, interval=0.5)
        except AssertionError:
            raise AssertionError(
                f"{admin(rx, f'/admin/projects/{project.name}/stats')} "
                f"sent {len(script.calls)}; client errors {errors[:3]}"
            ) from None
        unique = sum(script.events_of.values())
        assert not errors
        # The SDK may resend a request whose answer it missed (at-least-once): any extra
        # receipt must show up as a duplicate, never as a second event.
        assert stats["received"] >= len(script.calls)
        assert stats["stored"] == unique
        assert stats["duplicates"] == stats["received"] - unique >= script.duplicates
        assert stats["conflicting_duplicates"] == 0
        assert stats["rejected"] == stats["dead_lettered"] == 0

        # Then a shared browser: Bob logs in on visitor 0's laptop.
        send(
            client,
            "identify",
            {"user_id": "bob", "anonymous_id": "anon-0", "traits": {"email": "bob@acme0.com"}},
        )
        client.flush()
        wait_for(
            lambda: admin(rx, f"/admin/projects/{project.name}/profiles", email="bob@acme0.com")[
                "profiles"
            ],
            timeout=30,
        )
        check_profiles(rx, project, script)
        refused = db.execute(
            "SELECT count(*) FROM profile_merges WHERE project_id = %s AND refused", (project.id,)
        ).fetchone()
        assert refused == (1,)
        live = db.execute(
            "SELECT count(*) FROM profiles WHERE project_id = %s AND merged_into IS NULL",
            (project.id,),
        ).fetchone()
        assert live == (VISITORS + 1,)
    finally:
        client.shutdown()
        if survivor is not None:
            survivor.stop()
        victim.stop()


def check_profiles(rx: Receiver, project: Project, script: Script) -> None:
    base = f"/admin/projects/{project.name}"
    for i in range(VISITORS):
        [profile] = admin(rx, base + "/profiles", profile_id=f"ko-{i}")["profiles"]
        assert profile["event_count"] == script.events_of[f"v{i}"], i
        assert profile["anonymous_ids"] == [f"anon-{i}"]
        if i % 2 == 0:
            assert profile["emails"] == [f"v{i}@acme{i % 7}.com"]
            assert profile["user_ids"] == [f"user-{i}"]
            assert profile["traits"]["plan"] == "pro"
            by_email = admin(rx, base + "/profiles", email=f"  V{i}@ACME{i % 7}.COM")
            assert [p["id"] for p in by_email["profiles"]] == [profile["id"]]
            if i % 4 == 0:
                assert [a["domain"] for a in profile["accounts"]] == [f"acme{i % 7}.com"]
        elif i % 10 == 1:
            assert profile["user_ids"] == [f"user-{i}"] and profile["emails"] == []
        else:
            assert profile["user_ids"] == [] and profile["emails"] == []
    [bob] = admin(rx, base + "/profiles", email="bob@acme0.com")["profiles"]
    assert bob["event_count"] == 1 and bob["anonymous_ids"] == []
    [ann] = admin(rx, base + "/profiles", anonymous_id="anon-0")["profiles"]
    assert ann["emails"] == ["v0@acme0.com"]

    # events of one visitor, newest first, paged with the cursor
    [v2] = admin(rx, base + "/profiles", user_id="user-2")["profiles"]
    first = admin(rx, f"{base}/profiles/{v2['id']}/events", limit=4)
    assert len(first["items"]) == 4 and first["next"]
    rest = admin(rx, f"{base}/profiles/{v2['id']}/events", limit=50, cursor=first["next"])
    events = first["items"] + rest["items"]
    assert rest["next"] is None
    assert len(events) == script.events_of["v2"]
    assert len({e["message_id"] for e in events}) == len(events)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    assert {e["type"] for e in events} == {"track", "page", "identify"}


def test_admin_api_needs_the_bearer_token(e2e_receiver: Receiver, project: Project) -> None:
    url = e2e_receiver.url + f"/admin/projects/{project.name}/stats"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_admin_api_answers_404_and_400_clearly(e2e_receiver: Receiver, project: Project) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = e2e_receiver.url + "/admin/projects"
    missing = httpx.get(f"{base}/nope/stats", headers=headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_project")
    two = httpx.get(
        f"{base}/{project.name}/profiles",
        params={"email": "a@b.co", "user_id": "u"},
        headers=headers,
    )
    assert (two.status_code, two.json()["code"]) == (400, "invalid_request")
    bad = httpx.get(
        f"{base}/{project.name}/profiles/1/events", params={"cursor": "zzz"}, headers=headers
    )
    assert bad.status_code in (400, 404)
    assert (
        httpx.get(f"{base}/{project.name}/profiles/999999999/events", headers=headers).status_code
        == 404
    )
