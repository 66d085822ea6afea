"""Koala's acceptance rule per project (`accept = all | identified`, ingest/acceptance.py):
the rule itself as a table, set at create and changed later through every surface with an
audit record, and a real receiver + worker refusing exactly the calls the rule refuses,
kept as `not_identified` rejections with their payloads, reconciliation exact."""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from conftest import (
    Proc,
    Receiver,
    Servers,
    koala,
    reconciled,
    start_receiver,
    start_worker,
    stored_per_message,
    wait_for,
)

from ingest.acceptance import Acceptance
from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.operations import projects
from ingest.operations.actor import Actor
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid
from ingest.operations.stats import stats
from ingest.wire import parse_koala, parse_segment
from workers.normalize import normalize

CACHE_SECONDS = 1.0
TOKEN = "kt_accept_" + secrets.token_hex(8)
RULE = Acceptance(frozenset(Settings().blocked_identifiers))

# (case, call, taken under `identified`)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("email in traits", {"type": "identify", "userId": "u1",
                         "traits": {"email": "ann@acme.com"}}, True),
    ("Email in traits, any case", {"type": "identify", "userId": "u2",
                                   "traits": {"Email": "bob@acme.com"}}, True),
    ("email in properties", {"type": "track", "userId": "u3", "event": "Signed Up",
                             "properties": {"email": "cy@acme.com"}}, True),
    ("EMAIL in properties", {"type": "track", "userId": "u4", "event": "Signed Up",
                             "properties": {"EMAIL": "di@acme.com"}}, True),
    ("email in context.traits", {"type": "track", "userId": "u5", "event": "Clicked",
                                 "context": {"traits": {"email": "ed@acme.com"}}}, True),
    ("profile_id only", {"type": "track", "anonymousId": "a6", "event": "Viewed Docs",
                         "properties": {"profile_id": "ko-6"}}, True),
    ("profile_id in traits", {"type": "identify", "anonymousId": "a7",
                              "traits": {"profile_id": "ko-7"}}, True),
    ("neither (track)", {"type": "track", "userId": "u8", "event": "Clicked"}, False),
    ("neither (identify)", {"type": "identify", "userId": "u9",
                            "traits": {"plan": "pro"}}, False),
    ("not an email", {"type": "identify", "userId": "u10",
                      "traits": {"email": "not an email"}}, False),
    ("blocked profile_id", {"type": "track", "anonymousId": "a11", "event": "Clicked",
                            "properties": {"profile_id": "null"}}, False),
    ("email under another key", {"type": "track", "userId": "u12", "event": "Clicked",
                                 "properties": {"emails": "fa@acme.com"}}, False),
    ("anonymous page", {"type": "page", "anonymousId": "a13", "name": "Pricing"}, True),
    ("anonymous screen", {"type": "screen", "anonymousId": "a14", "name": "Home"}, True),
    ("group without email", {"type": "group", "userId": "u15", "groupId": "g1"}, True),
    ("alias", {"type": "alias", "userId": "u16", "previousId": "a16"}, True),
]  # fmt: skip


def name(prefix: str = "acc") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def ops(db: psycopg.Connection) -> Iterator[Ops]:
    context = Ops(db, Settings(), Actor("test:ann", "operator"))
    yield context
    context.close()


@pytest.fixture(scope="module")
def rx(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(
        servers,
        tmp_path_factory.mktemp("rx"),
        KOALA_KEY_CACHE_SECONDS=str(CACHE_SECONDS),
        ADMIN_TOKEN=TOKEN,
    )
    yield started
    started.proc.stop()


@pytest.fixture(scope="module")
def worker(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    proc = start_worker(servers, tmp_path_factory.mktemp("worker"))
    yield proc
    proc.stop()


# --- the rule, pure -------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "call", "taken"), CASES, ids=[c[0] for c in CASES])
def test_the_rule_takes_exactly_the_identified_track_and_identify_calls(
    case: str, call: dict[str, Any], taken: bool
) -> None:
    assert (RULE.problem(call) is None) is taken
    # `all` takes every one of them
    body = {"batch": [{**call, "messageId": "m"}]}
    parsed = parse_segment(
        body, None, raw=b"", max_call_bytes=32_000, max_batch_calls=10,
        received_at="2026-01-01T00:00:00.000Z",
    )  # fmt: skip
    assert (len(parsed.calls), len(parsed.rejected)) == (1, 0)


def test_koala_format_items_are_identified_by_the_request_fields() -> None:
    def parse(doc: dict[str, Any]) -> tuple[int, list[str]]:
        parsed = parse_koala(
            doc, max_call_bytes=32_000, max_batch_calls=10,
            received_at="2026-01-01T00:00:00.000Z", accept=RULE,
        )  # fmt: skip
        return len(parsed.calls), [r.code for r in parsed.rejected]

    event = {"event": "Viewed Pricing", "message_id": "k1"}
    assert parse({"profile_id": "ko-1", "events": [dict(event)]}) == (1, [])
    assert parse({"email": "ann@acme.com", "identifies": [{"message_id": "k2"}]}) == (1, [])
    # a request email that is no email and no profile_id: the item needs its own
    bad = {"email": "nope", "events": [dict(event)], "page_views": [{"message_id": "k3"}]}
    assert parse(bad) == (1, ["not_identified"])  # the page view is taken
    bad = {"email": "nope", "events": [{**event, "properties": {"email": "ann@acme.com"}}]}
    assert parse(bad) == (1, [])


# --- the setting, on every surface ----------------------------------------------------------


def test_accept_is_all_by_default_set_at_create_changed_later_and_audited(
    ops: Ops, db: psycopg.Connection
) -> None:
    default = projects.create(ops, name())
    assert default.accept == "all"
    created = projects.create(ops, name(), accept="identified")
    assert created.accept == "identified"
    assert projects.set_accept(ops, created.name, "all").accept == "all"
    assert projects.set_accept(ops, created.name, "identified").accept == "identified"
    assert projects.get(ops, created.name).accept == "identified"
    with pytest.raises(Invalid) as error:
        projects.set_accept(ops, created.name, "everything")
    assert error.value.code == "invalid_accept"
    with pytest.raises(Invalid):
        projects.create(ops, name(), accept="some")
    rows = db.execute(
        "SELECT actor, action, selection FROM audit_log WHERE project_id = %s ORDER BY id",
        (created.id,),
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("test:ann", "project.create"),
        ("test:ann", "project.accept"),
        ("test:ann", "project.accept"),
    ]
    assert rows[0][2]["accept"] == "identified"
    assert [r[2] for r in rows[1:]] == [
        {"accept": "all", "before": "identified"},
        {"accept": "identified", "before": "all"},
    ]


def test_the_cli_and_the_admin_api_set_it(ops: Ops, servers: Servers, rx: Receiver) -> None:
    made = name("cli")
    subprocess.run(
        koala("projects", "create", made, "--accept", "identified"),
        env=servers.env(), check=True, capture_output=True,
    )  # fmt: skip
    assert projects.get(ops, made).accept == "identified"
    done = subprocess.run(
        koala("projects", "accept", made, "all"),
        env=servers.env(), check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert f"{made}: accept all" in done.stdout
    assert projects.get(ops, made).accept == "all"
    refused = subprocess.run(
        koala("projects", "accept", made, "some"), env=servers.env(), capture_output=True
    )
    assert refused.returncode != 0

    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{rx.url}/admin/projects/{made}/accept"
    answer = httpx.put(url, json={"accept": "identified"}, headers=auth, timeout=10)
    assert answer.status_code == 200 and answer.json()["accept"] == "identified"
    assert httpx.put(url, json={"accept": "x"}, headers=auth, timeout=10).status_code == 400
    extra = {"accept": "all", "other": 1}
    assert httpx.put(url, json=extra, headers=auth, timeout=10).status_code == 400
    answer = httpx.post(
        f"{rx.url}/admin/projects",
        json={"name": name("api"), "accept": "identified"},
        headers=auth,
        timeout=10,
    )
    assert answer.status_code == 201 and answer.json()["accept"] == "identified"


# --- a real receiver and worker ---------------------------------------------------------------


def test_an_identified_project_refuses_exactly_the_rules_calls_and_reconciles(
    ops: Ops, db: psycopg.Connection, rx: Receiver, worker: Proc
) -> None:
    created = projects.create(ops, name("e2e"), accept="identified")
    key = created.public_key
    batch = [{**call, "messageId": f"b-{i}"} for i, (_, call, _) in enumerate(CASES)]
    answer = httpx.post(f"{rx.url}/v1/batch", json={"batch": batch}, headers=basic(key), timeout=10)
    assert answer.status_code == 200
    refused = [i for i, (_, _, taken) in enumerate(CASES) if not taken]
    assert [r["index"] for r in answer.json()["rejected"]] == refused
    assert {r["code"] for r in answer.json()["rejected"]} == {"not_identified"}

    # a single call: refused with 400 and kept, like every refused single call
    single = {"userId": "u99", "event": "Clicked", "messageId": "s-1"}
    answer = httpx.post(f"{rx.url}/v1/track", json=single, headers=basic(key), timeout=10)
    assert answer.status_code == 400 and answer.json()["code"] == "not_identified"
    # the key in the body: the rule applies too
    answer = httpx.post(
        f"{rx.url}/v1/batch",
        json={"writeKey": key, "batch": [{**single, "type": "track", "messageId": "s-2"}]},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["rejected"][0]["code"] == "not_identified"
    # the Koala format and the webhook
    koala_body = {"profile_id": "ko-42", "events": [{"event": "Viewed", "message_id": "k-1"}]}
    answer = httpx.post(f"{rx.url}/web/projects/{key}/batch", json=koala_body, timeout=10)
    assert answer.status_code == 200 and "rejected" not in answer.json()
    hook = [{**single, "type": "track", "messageId": "w-1"}]
    answer = httpx.post(f"{rx.url}/webhooks/segment/{key}", json=hook, timeout=10)
    assert answer.status_code == 200 and answer.json()["rejected"][0]["code"] == "not_identified"

    # back to `all`: the same call is taken (within the receivers' cache time)
    projects.set_accept(ops, created.name, "all")
    time.sleep(CACHE_SECONDS * 2.5)  # two reloads of the receiver's project cache
    later = {**single, "messageId": "s-3"}
    answer = httpx.post(f"{rx.url}/v1/track", json=later, headers=basic(key), timeout=10)
    assert answer.status_code == 200

    taken = [f"b-{i}" for i, (_, _, ok) in enumerate(CASES) if ok] + ["k-1", "s-3"]

    def settled() -> object:
        s = stats(ops, created.name)
        return s if s.in_flight == 0 and reconciled(s.model_dump()) else None

    found: Any = wait_for(settled, timeout=60, interval=0.3)
    rows = db.execute(
        "SELECT code, payload FROM rejections WHERE project_id = %s ORDER BY id", (created.id,)
    ).fetchall()
    assert {r[0] for r in rows} == {"not_identified"}
    # every refused call is kept with its payload: the batch's, the single, body key, webhook
    ids = sorted(_message_id(r[1]) for r in rows)
    assert ids == sorted([f"b-{i}" for i in refused] + ["s-1", "s-2", "w-1"])
    assert found.rejected == len(rows) == len(refused) + 3
    assert found.stored == len(taken)
    assert stored_per_message(db, created.id) == dict.fromkeys(taken, 1)


def _message_id(payload: Any) -> str:
    doc = orjson.loads(payload) if isinstance(payload, str | bytes) else payload
    return str(doc["messageId"])


def test_normalize_reads_the_email_the_rule_accepted_in_any_letter_case() -> None:
    rules = Rules(frozenset(Settings().blocked_identifiers))
    call = {
        "type": "track", "userId": "u1", "event": "Signed Up", "messageId": "n-1",
        "receivedAt": "2026-01-01T00:00:00.000Z", "properties": {"EMAIL": "Ann@Acme.com"},
    }  # fmt: skip
    assert RULE.problem(call) is None
    assert normalize(1, "segment", call, None, rules).ids.email == "ann@acme.com"
