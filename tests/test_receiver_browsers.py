"""What a browser gets over HTTP from the receiver: CORS preflights answered without Redis
or PostgreSQL, CORS headers on every ingestion answer (errors included), nothing opened on
the admin API, a project's allowed origins enforced on every ingestion path, and
analytics.js's own telemetry (`/v1/m`) counted. tests/test_browser.py does the same with
the real analytics.js in Chromium."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest
import redis
from conftest import Receiver, Servers, start_receiver
from test_receiver import TRACK, Queue, basic

from ingest.embedded import EmbeddedRedis
from ingest.store import projects
from ingest.store.projects import Project

QUEUE = f"browsers-test-{secrets.token_hex(3)}"  # no worker consumes it: we read it ourselves
SITE = "https://www.acme.com"
PREFLIGHT = {
    "Origin": SITE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
}


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(
        servers, tmp_path_factory.mktemp("rx"), KOALA_QUEUE_NAME=QUEUE, ADMIN_TOKEN="t"
    )
    yield started
    started.proc.stop()


@pytest.fixture
def queue(servers: Servers) -> Iterator[Queue]:
    q = Queue(redis.Redis.from_url(servers.redis_url), servers.prefix + QUEUE)
    q.clear()
    yield q
    q.clear()


def assert_preflight_ok(answer: httpx.Response, origin: str = SITE) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == origin
    assert answer.headers["access-control-allow-credentials"] == "true"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert (
        answer.headers["access-control-allow-headers"]
        == PREFLIGHT["Access-Control-Request-Headers"]
    )
    assert answer.headers["access-control-max-age"] == "7200"


def test_preflights_are_answered_with_redis_down_for_every_browser_path(
    servers: Servers, tmp_path: Path, project: Project
) -> None:
    """A preflight costs no Redis or PostgreSQL round trip: it is answered with Redis
    stopped; the call that follows gets its 503 with headers the browser lets it read."""
    own = EmbeddedRedis(tmp_path / "redis", persist=False)
    own.start()
    rx = start_receiver(servers, tmp_path, REDIS_URL=own.url)
    try:
        own.stop()
        for path in ("/v1/t", "/v1/b", "/v1/track", "/v1/batch", "/v1/m"):
            assert_preflight_ok(httpx.options(rx.url + path, headers=PREFLIGHT))
        koala = f"/web/projects/{project.public_key}/batch"
        assert_preflight_ok(httpx.options(rx.url + koala, headers=PREFLIGHT))
        down = httpx.post(
            rx.url + "/v1/t",
            json=TRACK,
            headers={"Origin": SITE, **basic(project.public_key)},
            timeout=30,
        )
        assert down.status_code == 503
        assert down.headers["access-control-allow-origin"] == SITE
        assert down.headers["access-control-expose-headers"] == "Retry-After"
        assert down.headers["retry-after"].isdigit()
    finally:
        rx.proc.stop()
        own.stop()


def test_every_ingestion_answer_to_a_browser_carries_cors_errors_included(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    browser = {"Origin": "http://localhost:3000", "Content-Type": "text/plain"}
    body = {**TRACK, "writeKey": project.public_key}
    ok = httpx.post(rx.url + "/v1/t", json=body, headers=browser)
    bad_key = httpx.post(rx.url + "/v1/t", json={**TRACK, "writeKey": "pk_nope"}, headers=browser)
    bad_json = httpx.post(rx.url + "/v1/b", content=b"{", headers=browser)
    koala = httpx.post(
        rx.url + f"/web/projects/{project.public_key}/batch",
        json={"profile_id": "ko-1", "events": [{"event": "Viewed", "message_id": "k1"}]},
        headers=browser,
    )
    assert [a.status_code for a in (ok, bad_key, bad_json, koala)] == [200, 401, 400, 200]
    for answer in (ok, bad_key, bad_json, koala):
        assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in answer.headers["vary"]
    assert len(queue.calls()) == 2
    # a server-side sender (no Origin) gets no CORS headers: it has no use for them
    server = httpx.post(rx.url + "/v1/track", json=TRACK, headers=basic(project.public_key))
    assert server.status_code == 200
    assert "access-control-allow-origin" not in server.headers


def test_the_admin_api_metrics_and_webhooks_are_not_opened_to_other_origins(
    rx: Receiver, project: Project
) -> None:
    for path in (
        f"/admin/projects/{project.name}/stats",
        "/metrics",
        "/readyz",
        f"/webhooks/segment/{project.public_key}",
    ):
        preflight = httpx.options(rx.url + path, headers=PREFLIGHT)
        assert preflight.status_code == 405, path
        assert "access-control-allow-origin" not in preflight.headers, path
    stats = httpx.get(
        rx.url + f"/admin/projects/{project.name}/stats",
        headers={"Origin": SITE, "Authorization": "Bearer t"},
    )
    assert stats.status_code == 200
    assert "access-control-allow-origin" not in stats.headers


def test_a_project_with_allowed_origins_refuses_other_origins_on_every_path(
    rx: Receiver, queue: Queue, db: psycopg.Connection
) -> None:
    """Refused as 403 and kept as a rejection (its body as evidence); its own origins,
    subdomains by wildcard, and callers without Origin (server-side) are taken."""
    secret = "s3cret"
    project = projects.create(
        db,
        f"origins-{secrets.token_hex(3)}",
        webhook_secret=secret,
        allowed_origins=[SITE, "https://*.acme.io"],
    )
    key = project.public_key
    koala_body = {"profile_id": "ko-1", "events": [{"event": "Viewed", "message_id": "k1"}]}
    webhook_body = orjson.dumps({**TRACK, "type": "track", "messageId": "w1"})
    signature = hmac.new(secret.encode(), webhook_body, hashlib.sha1).hexdigest()
    sends = {
        "segment": lambda origin: httpx.post(
            rx.url + "/v1/t", json={**TRACK, "writeKey": key}, headers=origin
        ),
        "batch": lambda origin: httpx.post(
            rx.url + "/v1/batch",
            json={"batch": [{**TRACK, "type": "track"}]},
            headers={**origin, **basic(key)},
        ),
        "koala": lambda origin: httpx.post(
            rx.url + f"/web/projects/{key}/batch", json=koala_body, headers=origin
        ),
        "webhook": lambda origin: httpx.post(
            rx.url + f"/webhooks/segment/{key}",
            content=webhook_body,
            headers={**origin, "X-Signature": signature},
        ),
    }
    for name, send in sends.items():
        refused = send({"Origin": "https://evil.example"})
        assert refused.status_code == 403, name
        assert refused.json()["code"] == "origin_not_allowed", name
        assert send({"Origin": SITE}).status_code == 200, name
        assert send({"Origin": "https://docs.acme.io"}).status_code == 200, name
        assert send({}).status_code == 200, name
    rejected = queue.rejected()
    assert [r["code"] for r in rejected] == ["origin_not_allowed"] * 4
    assert all(r["index"] is None for r in rejected)
    assert '"Signed Up"' in rejected[0]["payload"]  # the refused body, as evidence
    assert len(queue.calls()) == 4 * 3


def test_analytics_js_telemetry_on_v1_m_is_counted_and_never_stored(
    rx: Receiver, queue: Queue
) -> None:
    series = {
        "series": [
            {"type": "Counter", "metric": "analytics_js.invoke", "value": 1, "tags": {}},
            {"type": "Counter", "metric": "analytics_js.invoke.error", "value": 1, "tags": {}},
            {"type": "Counter", "metric": "made.up", "value": 10**9, "tags": {}},
        ]
    }
    answer = httpx.post(
        rx.url + "/v1/m", json=series, headers={"Content-Type": "text/plain", "Origin": SITE}
    )
    assert answer.status_code == 200 and answer.json() == {"success": True}
    assert answer.headers["access-control-allow-origin"] == SITE
    refused = httpx.post(rx.url + "/v1/m", json={"metrics": 1})
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_envelope")
    exported = httpx.get(rx.url + "/metrics").text
    assert 'koala_receiver_sdk_metrics_total{metric="analytics_js.invoke"} 1.0' in exported
    assert 'koala_receiver_sdk_metrics_total{metric="analytics_js.invoke.error"} 1.0' in exported
    assert 'koala_receiver_sdk_metrics_total{metric="other"} 1.0' in exported
    assert queue.messages() == []


def test_allowed_origins_are_set_over_the_admin_api_and_bad_ones_refused(
    rx: Receiver, project: Project, db: psycopg.Connection
) -> None:
    url = rx.url + f"/admin/projects/{project.name}/allowed-origins"
    token = {"Authorization": "Bearer t"}
    assert httpx.put(url, json={"allowed_origins": None}).status_code == 401
    done = httpx.put(
        url, json={"allowed_origins": ["https://Acme.com/", "https://*.b.io"]}, headers=token
    )
    assert done.status_code == 200
    assert (done.json()["name"], done.json()["allowed_origins"]) == (
        project.name,
        ["https://acme.com", "https://*.b.io"],
    )
    for body, code in [
        ({"allowed_origins": ["acme.com"]}, "invalid_origin"),
        ({"allowed_origins": "https://acme.com"}, "invalid_request"),
        ({"origins": []}, "invalid_request"),
    ]:
        refused = httpx.put(url, json=body, headers=token)
        assert (refused.status_code, refused.json()["code"]) == (400, code), body
    stored = db.execute("SELECT allowed_origins FROM projects WHERE id = %s", (project.id,))
    assert stored.fetchone() == (["https://acme.com", "https://*.b.io"],)
    cleared = httpx.put(url, json={"allowed_origins": None}, headers=token)
    assert cleared.json()["allowed_origins"] is None
