"""The receiver against real Redis: what each sender sends arrives in the queue intact,
and every refusal is the status code the senders' retry logic expects."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import redis
from conftest import Receiver, Servers, start_receiver, wait_for

from ingest.embedded import EmbeddedRedis
from ingest.store import projects
from ingest.store.projects import Project

QUEUE = f"receiver-test-{secrets.token_hex(3)}"  # no worker consumes it: we read it ourselves


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(servers, tmp_path_factory.mktemp("rx"), KOALA_QUEUE_NAME=QUEUE)
    yield started
    started.proc.stop()


@pytest.fixture
def queue(servers: Servers) -> Iterator[Queue]:
    q = Queue(redis.Redis.from_url(servers.redis_url), servers.prefix + QUEUE)
    q.clear()
    yield q
    q.clear()


class Queue:
    """Reads the Celery messages the receiver wrote, as a worker would decode them."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def clear(self) -> None:
        self.client.delete(self.key)

    def messages(self) -> list[dict[str, Any]]:
        raw = self.client.lrange(self.key, 0, -1)
        return [orjson.loads(m) for m in reversed(raw)]  # LPUSH: oldest is last

    def requests(self) -> list[dict[str, Any]]:
        out = []
        for envelope in self.messages():
            assert envelope["headers"]["task"] == "koala.ingest"
            args, _kwargs, _embed = orjson.loads(base64.b64decode(envelope["body"]))
            out.extend(args[0])
        return out

    def calls(self) -> list[dict[str, Any]]:
        return [c for r in self.requests() for c in r["calls"]]

    def rejected(self) -> list[dict[str, Any]]:
        return [c for r in self.requests() for c in r["rejected"]]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


TRACK = {"userId": "u1", "event": "Signed Up", "messageId": "m-1", "properties": {"plan": "pro"}}


def test_basic_auth_single_call_is_queued_with_stamps(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    response = httpx.post(rx.url + "/v1/track", json=TRACK, headers=basic(project.public_key))
    assert (response.status_code, response.json()) == (200, {"success": True})
    [request] = queue.requests()
    assert request["project_id"] == project.id and request["source"] == "segment"
    [call] = request["calls"]
    assert call["event"] == "Signed Up" and call["type"] == "track" and call["messageId"] == "m-1"
    assert call["receivedAt"] == request["received_at"]


def test_write_key_in_the_body_authenticates_a_batch(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    body = {"writeKey": project.public_key, "batch": [dict(TRACK, type="track")]}
    assert httpx.post(rx.url + "/v1/batch", json=body).status_code == 200
    assert httpx.post(rx.url + "/v1/import", json=body).status_code == 200
    assert len(queue.calls()) == 2


def test_browser_short_paths_with_text_plain_bodies(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    headers = {"Content-Type": "text/plain"}
    page = {
        "writeKey": project.public_key,
        "anonymousId": "a1",
        "name": "Pricing",
        "context": {"page": {"url": "https://x.io/pricing"}},
    }
    assert (
        httpx.post(rx.url + "/v1/p", content=orjson.dumps(page), headers=headers).status_code == 200
    )
    batch = {"writeKey": project.public_key, "batch": [dict(TRACK, type="track")]}
    assert (
        httpx.post(rx.url + "/v1/b", content=orjson.dumps(batch), headers=headers).status_code
        == 200
    )
    assert [c["type"] for c in queue.calls()] == ["page", "track"]


@pytest.mark.parametrize(
    "path", ["/v1/track", "/v1/batch", "/web/projects/pk_nope/batch", "/webhooks/segment/pk_nope"]
)
def test_unknown_key_is_401_on_every_endpoint(rx: Receiver, queue: Queue, path: str) -> None:
    response = httpx.post(rx.url + path, json={"batch": []}, headers=basic("pk_nope"))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_key"
    assert httpx.get(rx.url + "/web/projects/pk_nope/auth").status_code == 401
    assert queue.messages() == []


def test_missing_key_is_401(rx: Receiver) -> None:
    response = httpx.post(rx.url + "/v1/track", json=TRACK)
    assert (response.status_code, response.json()["code"]) == (401, "missing_key")


def test_bad_json_is_400_and_nothing_is_queued(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    response = httpx.post(rx.url + "/v1/track", content=b"{nope", headers=basic(project.public_key))
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message"}
    assert response.json()["code"] == "invalid_json"
    assert queue.messages() == []


def test_oversize_single_call_is_413_and_kept_as_a_rejection(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    big = dict(TRACK, properties={"blob": "x" * 40_000})
    response = httpx.post(rx.url + "/v1/track", json=big, headers=basic(project.public_key))
    assert (response.status_code, response.json()["code"]) == (413, "call_too_large")
    [rejection] = queue.rejected()
    assert rejection["code"] == "call_too_large" and "x" * 100 in rejection["payload"]
    assert queue.calls() == []


def test_oversize_request_is_413(rx: Receiver, queue: Queue, project: Project) -> None:
    batch = {
        "batch": [
            dict(TRACK, type="track", messageId=str(i), properties={"p": "y" * 20_000})
            for i in range(30)
        ]
    }
    response = httpx.post(rx.url + "/v1/batch", json=batch, headers=basic(project.public_key))
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")
    assert [r["code"] for r in queue.rejected()] == ["request_too_large"]


def test_gzip_bomb_is_413(rx: Receiver, queue: Queue, project: Project) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 200_000_000 + b"]}")
    headers = {**basic(project.public_key), "Content-Encoding": "gzip"}
    started = time.monotonic()
    response = httpx.post(rx.url + "/v1/batch", content=bomb, headers=headers, timeout=30)
    assert response.status_code == 413
    assert time.monotonic() - started < 5
    assert queue.calls() == []


def test_gzip_body_is_accepted(rx: Receiver, queue: Queue, project: Project) -> None:
    body = gzip.compress(orjson.dumps({"batch": [dict(TRACK, type="track")]}))
    headers = {
        **basic(project.public_key),
        "Content-Encoding": "gzip",
        "Content-Type": "application/json",
    }
    assert httpx.post(rx.url + "/v1/batch", content=body, headers=headers).status_code == 200
    assert queue.calls()[0]["event"] == "Signed Up"


def test_partly_bad_batch_stores_the_good_and_lists_the_bad_by_index(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    batch = {
        "batch": [
            dict(TRACK, type="track", messageId="ok-1"),
            {"event": "no type", "userId": "u"},
            {"type": "track", "userId": "u"},
            {"type": "group", "userId": "u"},
            {"type": "alias", "userId": "u"},
            dict(TRACK, type="track", messageId="big", properties={"b": "z" * 40_000}),
            dict(TRACK, type="track", messageId="ok-2"),
        ]
    }
    response = httpx.post(rx.url + "/v1/batch", json=batch, headers=basic(project.public_key))
    assert response.status_code == 200
    rejected = response.json()["rejected"]
    assert [(r["index"], r["code"]) for r in rejected] == [
        (1, "missing_type"),
        (2, "missing_event"),
        (3, "missing_group_id"),
        (4, "missing_previous_id"),
        (5, "call_too_large"),
    ]
    assert [c["messageId"] for c in queue.calls()] == ["ok-1", "ok-2"]
    assert len(queue.rejected()) == 5


def test_koala_format_answers_status_success(rx: Receiver, queue: Queue, project: Project) -> None:
    body = {
        "profile_id": "b3f1",
        "email": "ann@acme.com",
        "ip": "1.2.3.4",
        "events": [
            {
                "type": "track",
                "event": "Viewed Pricing",
                "message_id": "k1",
                "sent_at": "2026-11-20T10:00:00Z",
                "properties": {},
            }
        ],
        "identifies": [{"type": "identify", "traits": {"name": "Ann"}, "message_id": "k2"}],
    }
    response = httpx.post(
        rx.url + f"/web/projects/{project.public_key}/batch",
        json=body,
        headers={"User-Agent": "Segment (Actions)"},
    )
    assert (response.status_code, response.json()) == (200, {"status": "success"})
    [request] = queue.requests()
    assert request["source"] == "koala" and request["shared"]["email"] == "ann@acme.com"
    assert [c["message_id"] for c in request["calls"]] == ["k1", "k2"]


def test_koala_body_without_identity_is_400_in_koala_shape(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    response = httpx.post(
        rx.url + f"/web/projects/{project.public_key}/batch", json={"events": [{"event": "x"}]}
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "Invalid request",
        "code": "missing_identity",
        "message": "Missing required field: email or profile_id",
    }
    assert [r["code"] for r in queue.rejected()] == ["missing_identity"]


def test_koala_connection_test_is_204_for_a_valid_key(rx: Receiver, project: Project) -> None:
    assert httpx.get(rx.url + f"/web/projects/{project.public_key}/auth").status_code == 204


@pytest.fixture
def signed_project(db: psycopg.Connection) -> Project:
    return projects.create(db, f"hook-{secrets.token_hex(3)}", webhook_secret="whsec")


def test_webhook_with_good_bad_and_missing_signatures(
    rx: Receiver, queue: Queue, signed_project: Project
) -> None:
    url = rx.url + f"/webhooks/segment/{signed_project.public_key}"
    body = orjson.dumps(dict(TRACK, type="track"))
    good = hmac.new(b"whsec", body, hashlib.sha1).hexdigest()
    assert httpx.post(url, content=body, headers={"X-Signature": good}).status_code == 200
    bad = httpx.post(url, content=body, headers={"X-Signature": "0" * 40})
    assert (bad.status_code, bad.json()["code"]) == (401, "invalid_signature")
    assert httpx.post(url, content=body).status_code == 401
    assert len(queue.calls()) == 1


def test_webhook_batch_is_signed_by_its_first_item(
    rx: Receiver, queue: Queue, signed_project: Project
) -> None:
    first = orjson.dumps(dict(TRACK, type="track", messageId="w1"))
    body = b"[" + first + b"," + orjson.dumps(dict(TRACK, type="track", messageId="w2")) + b"]"
    signature = hmac.new(b"whsec", first, hashlib.sha1).hexdigest()
    response = httpx.post(
        rx.url + f"/webhooks/segment/{signed_project.public_key}",
        content=body,
        headers={"X-Signature": signature},
    )
    assert response.status_code == 200
    assert [c["messageId"] for c in queue.calls()] == ["w1", "w2"]


def test_concurrent_requests_share_queue_writes(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    def send(i: int) -> int:
        return httpx.post(
            rx.url + "/v1/track",
            json=dict(TRACK, messageId=f"c{i}"),
            headers=basic(project.public_key),
        ).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(send, range(400)))
    assert statuses == [200] * 400
    assert sorted(c["messageId"] for c in queue.calls()) == sorted(f"c{i}" for i in range(400))
    # every request's calls arrived, in fewer messages than requests (group commit)
    assert len(queue.messages()) < 400


def test_metrics_count_requests_and_calls(rx: Receiver, project: Project, queue: Queue) -> None:
    httpx.post(rx.url + "/v1/track", json=TRACK, headers=basic(project.public_key))
    text = httpx.get(rx.url + "/metrics").text
    assert 'koala_receiver_requests_total{endpoint="segment",status="200"}' in text
    assert 'koala_receiver_calls_accepted_total{source="segment"}' in text
    assert "koala_queue_depth_messages" in text


def test_segment_python_sdk_delivers_every_call_type(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    from segment.analytics import Client

    for use_gzip in (False, True):
        queue.clear()
        client = Client(
            project.public_key, host=rx.url, sync_mode=True, gzip=use_gzip, max_retries=0
        )
        client.track("u1", "Signed Up", {"plan": "pro"})
        client.identify("u1", {"email": "ann@acme.com"})
        client.page("u1", "Docs", "Pricing", {"url": "https://x.io/pricing"})
        client.screen("u1", "App", "Home")
        client.group("u1", "acme", {"name": "Acme", "domain": "acme.com"})
        client.alias("anon-1", "u1")
        client.flush()
        calls = queue.calls()
        assert [c["type"] for c in calls] == [
            "track",
            "identify",
            "page",
            "screen",
            "group",
            "alias",
        ]
        assert calls[0]["properties"] == {"plan": "pro"}
        assert calls[4]["groupId"] == "acme" and calls[5]["previousId"] == "anon-1"
        assert all(c["context"]["library"]["name"] == "analytics-python" for c in calls)
        assert len({c["messageId"] for c in calls}) == 6


def test_queue_over_its_ceiling_is_429_with_retry_after(
    servers: Servers, tmp_path: Path, project: Project
) -> None:
    name = f"full-{secrets.token_hex(3)}"
    full = start_receiver(servers, tmp_path, KOALA_QUEUE_NAME=name, KOALA_QUEUE_MAX_DEPTH="2")
    try:
        statuses = [
            httpx.post(
                full.url + "/v1/track", json=TRACK, headers=basic(project.public_key)
            ).status_code
            for _ in range(4)
        ]
        assert statuses[:2] == [200, 200] and statuses[-1] == 429
        refused = httpx.post(full.url + "/v1/track", json=TRACK, headers=basic(project.public_key))
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["code"] == "queue_full"
        # every receiver sees the same queue: readiness stays up (429 says it better)
        ready = httpx.get(full.url + "/readyz")
        assert ready.status_code == 200 and "ceiling" in ready.json()["warnings"][0]
    finally:
        full.proc.stop()
        redis.Redis.from_url(servers.redis_url).delete(servers.prefix + name)


def test_redis_down_is_503_and_nothing_is_acknowledged(
    servers: Servers, tmp_path: Path, project: Project
) -> None:
    own = EmbeddedRedis(tmp_path / "redis", persist=False)
    own.start()
    rx = start_receiver(servers, tmp_path, REDIS_URL=own.url)
    try:
        ok = httpx.post(rx.url + "/v1/track", json=TRACK, headers=basic(project.public_key))
        assert ok.status_code == 200
        own.stop()
        down = httpx.post(
            rx.url + "/v1/track",
            json=dict(TRACK, messageId="lost?"),
            headers=basic(project.public_key),
            timeout=30,
        )
        assert down.status_code == 503
        assert down.json()["code"] == "queue_unavailable"
        assert down.headers["Retry-After"].isdigit()
        wait_for(lambda: httpx.get(rx.url + "/readyz").status_code == 503, timeout=10)
        own.start()  # same port: the receiver reconnects by itself
        wait_for(lambda: httpx.get(rx.url + "/readyz").status_code == 200, timeout=20)
        again = httpx.post(
            rx.url + "/v1/track",
            json=dict(TRACK, messageId="after"),
            headers=basic(project.public_key),
        )
        assert again.status_code == 200
        key = servers.prefix + "ingest"
        bodies = [
            orjson.loads(base64.b64decode(orjson.loads(m)["body"]))
            for m in redis.Redis.from_url(own.url).lrange(key, 0, -1)
        ]
        ids = [c["messageId"] for b in bodies for r in b[0][0] for c in r["calls"]]
        assert ids == ["after"]  # the 503 call was not acknowledged and is not there
    finally:
        rx.proc.stop()
        own.stop()


def test_redis_over_maxmemory_is_503_and_writes_nothing_of_the_request(
    servers: Servers, tmp_path: Path, project: Project
) -> None:
    """A flush is one script (queue, ledger, counters): Redis refuses its first write when
    over maxmemory, so a refused request leaves no message, no ledger entry and no count
    behind, and the sender's retry is not counted twice."""
    own = EmbeddedRedis(tmp_path / "redis", persist=False)
    own.start()
    rx = start_receiver(servers, tmp_path, REDIS_URL=own.url)
    client = redis.Redis.from_url(own.url)
    prefix = servers.prefix
    batch = {"batch": [dict(TRACK, messageId=f"oom-{i}") for i in range(3)]}

    def written() -> tuple[int, int, int, bytes | None]:
        return (
            client.llen(prefix + "ingest"),
            client.hlen(f"{prefix}ledger:ingest"),
            client.zcard(f"{prefix}ledger:ingest:since"),
            client.hget(prefix + "received", str(project.id)),
        )

    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # every write is over it; reads still work
        refused = httpx.post(
            rx.url + "/v1/batch", json=batch, headers=basic(project.public_key), timeout=30
        )
        assert refused.status_code == 503
        assert refused.json()["code"] == "queue_unavailable"
        assert written() == (0, 0, 0, None)
        client.config_set("maxmemory", 0)
        accepted = httpx.post(rx.url + "/v1/batch", json=batch, headers=basic(project.public_key))
        assert accepted.status_code == 200
        assert written() == (1, 1, 1, b"3")
    finally:
        client.close()
        rx.proc.stop()
        own.stop()


def test_an_empty_batch_is_200_and_queues_nothing(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    response = httpx.post(
        rx.url + "/v1/batch", json={"batch": []}, headers=basic(project.public_key)
    )
    assert response.status_code == 200
    assert queue.messages() == []


# --- issue #13's reproducers: each answered 500, or was accepted and dead-lettered later --

DEEP_PROPERTIES = b'{"a":' * 1000 + b"1" + b"}" * 1000


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/b"])
def test_an_item_whose_type_is_a_list_or_object_is_rejected_and_its_batch_kept(
    rx: Receiver, queue: Queue, project: Project, path: str
) -> None:
    batch = {"batch": [{"type": [1]}, dict(TRACK, type="track"), {"type": {"a": 1}}]}
    response = httpx.post(rx.url + path, json=batch, headers=basic(project.public_key))
    assert response.status_code == 200, response.text
    assert [(r["index"], r["code"]) for r in response.json()["rejected"]] == [
        (0, "invalid_type"),
        (2, "invalid_type"),
    ]
    assert [c["messageId"] for c in queue.calls()] == ["m-1"]
    assert len(queue.rejected()) == 2


def test_koala_and_webhook_items_whose_type_is_a_list_are_rejected(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    koala = httpx.post(
        rx.url + f"/web/projects/{project.public_key}/batch",
        json={"profile_id": "p1", "events": [{"event": "E", "type": [1]}, {"event": "E"}]},
    )
    assert koala.status_code == 200, koala.text
    assert [r["code"] for r in koala.json()["rejected"]] == ["invalid_type"]
    hook = httpx.post(
        rx.url + f"/webhooks/segment/{project.public_key}",
        json=[{"type": [1], "userId": "u"}, dict(TRACK, type="track")],
    )
    assert hook.status_code == 200, hook.text
    assert [r["code"] for r in hook.json()["rejected"]] == ["invalid_type"]
    single = httpx.post(
        rx.url + f"/webhooks/segment/{project.public_key}", json={"type": {"a": 1}, "userId": "u"}
    )
    assert (single.status_code, single.json()["code"]) == (400, "invalid_type")
    assert len(queue.calls()) == 2 and len(queue.rejected()) == 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"userId": "u", "event": "E", "properties": ' + DEEP_PROPERTIES + b"}", "too_deep"),
        (b'{"userId": "u", "event": 5}', "invalid_event"),
        (b'{"userId": "u", "event": "E", "timestamp": 123}', "invalid_timestamp"),
        (b'{"userId": "u", "event": "E", "properties": {"x": "a\\u0000"}}', "invalid_text"),
        (b'{"userId": "u", "event": "E", "properties": {"a\\u0000": 1}}', "invalid_text"),
        (b'{"userId": {"id": 1}, "event": "E"}', "invalid_id"),
    ],
)
def test_a_single_call_that_can_never_be_stored_is_400_and_kept_as_a_rejection(
    rx: Receiver, queue: Queue, project: Project, body: bytes, code: str
) -> None:
    response = httpx.post(rx.url + "/v1/track", content=body, headers=basic(project.public_key))
    assert (response.status_code, response.json()["code"]) == (400, code), response.text
    assert set(response.json()) == {"code", "message"}
    assert [r["code"] for r in queue.rejected()] == [code]
    assert queue.calls() == []


def test_a_koala_request_whose_person_holds_a_nul_is_400_and_kept(
    rx: Receiver, queue: Queue, project: Project
) -> None:
    response = httpx.post(
        rx.url + f"/web/projects/{project.public_key}/batch",
        content=b'{"profile_id": "p\\u0000", "events": [{"event": "E"}]}',
    )
    assert (response.status_code, response.json()["code"]) == (400, "invalid_text")
    [rejection] = queue.rejected()
    assert rejection["code"] == "invalid_text" and "\x00" not in rejection["payload"]
