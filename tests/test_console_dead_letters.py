"""The console's dead letters, rejections and deletions in headless Chromium (#15): an
operator finds a poisoned call's dead letter, corrects its payload in the page and replays
it (stored once, every call accounted for); a payload that is not JSON is refused before
it is sent; a bulk replay runs a dry run, a confirm step, then parts of 100 with a
progress bar that reaches the total; a POST without the CSRF token is refused; the
rejections and deletions pages list what the API lists, to the last page. Screenshots
under tests/artifacts/console/<test>/.

Also the operations these pages added: a replay in parts (`after_id` in, `last_id` out)
and the audit entries naming one letter (its history)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from typing import Any

import console_harness as harness
import httpx
import orjson
import psycopg
import pytest
import redis
from conftest import Servers, queued, reconciled, wait_for
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect
from test_dead_letters import nul_call, queue_past_the_receiver

from ingest.config import Settings
from ingest.operations import audit, dead_letters
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.operations.stats import received_key
from ingest.store import projects
from ingest.store.projects import Project

chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator
slow = pytest.mark.slow


def stats(stack: ConsoleStack, project: Project) -> dict[str, Any]:
    return stack.api("GET", f"/admin/projects/{project.name}/stats")  # type: ignore[no-any-return]


def settled(stack: ConsoleStack, project: Project, received: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        s = stats(stack, project)
        return s if s["received"] == received and s["in_flight"] == 0 else None

    return wait_for(done, timeout=60, interval=0.2)  # type: ignore[return-value]


def transient_letters(db: psycopg.Connection, project: Project, n: int, prefix: str) -> None:
    """`n` calls whose transient failures outlasted the retries (a lock nobody released,
    as tests/test_dead_letters.py makes for real): dead-lettered by the workers' own
    `dead_letter_all`, counted as received, and fine to store once replayed."""
    from workers.failure.isolation import dead_letter_all

    calls = [{"type": "track", "event": "Checkout", "userId": f"bulk-{i}",
              "messageId": f"bulk-{secrets.token_hex(4)}-{i}"} for i in range(n)]  # fmt: skip
    with db.transaction():
        dead_letter_all(
            db, [queued(project.id, *calls)], "transient_exhausted", psycopg.OperationalError("x")
        )
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.hincrby(received_key(prefix), str(project.id), n)
    client.close()


def events_of(db: psycopg.Connection, project: Project, message_id: str) -> list[Any]:
    return db.execute(
        "SELECT properties FROM events WHERE project_id = %s AND message_id = %s",
        (project.id, message_id),
    ).fetchall()


@slow
def test_an_operator_finds_a_poisoned_call_corrects_it_and_replays_it(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"shop-{secrets.token_hex(3)}")
    good = [{"type": "track", "event": "Ok", "userId": f"u{i}", "messageId": f"ok-{i}"}
            for i in range(4)]  # fmt: skip
    poison = {**nul_call("poison-1"), "properties": {"note": "nul\u0000byte"}}
    queue_past_the_receiver(project, [*good[:2], poison, *good[2:]], stack.servers.prefix)
    s = settled(stack, project, 5)
    assert (s["stored"], s["dead_lettered"]) == (4, 1) and reconciled(s)

    operator.sign_in()
    page = operator.goto("/console/dead-letters")
    operator.shot("dead-letters-choose-a-project")
    page.locator("#filters select[name=project]").select_option(project.name)
    page.locator("#filters button[type=submit]").click()
    page.wait_for_load_state()
    # counts by reason and stage, each a link that filters the list
    counts = page.locator("#counts tbody tr")
    expect(counts).to_have_count(1)
    expect(counts.first.locator("td").nth(1)).to_have_text("store")
    operator.shot("dead-letters-of-the-project")
    counts.first.locator("td").nth(1).locator("a").click()
    page.wait_for_load_state()
    assert "stage=store" in page.url
    [row] = page.locator("#letters tbody tr[data-id]").all()
    expect(row).to_contain_text("poison-1")
    operator.shot("filtered-by-stage")
    row.locator("a").first.click()
    page.wait_for_load_state()

    # the letter: payload, error, traceback, attempts; an operator may correct it
    expect(page.locator("[data-field=status]")).to_have_text("pending")
    expect(page.locator("[data-field=stage]")).to_have_text("store")
    expect(page.locator("[data-field=attempts]")).to_have_text("1")
    assert "Traceback" in page.locator("#traceback").inner_text()
    area = page.locator("#edit textarea[name=payload]")
    payload = json.loads(area.input_value())
    assert payload["properties"]["note"] == "nul\\u0000byte"  # kept as it came, escaped
    operator.shot("the-letter")
    payload["properties"]["note"] = "fixed in the console"
    area.fill(json.dumps(payload, indent=2))
    operator.shot("payload-corrected")
    page.locator("#edit button[type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator("p.done")).to_have_text("Corrected and replayed")
    # the page watches the letter (reloading) until the worker stored it
    expect(page.locator("[data-field=status]")).to_have_text("replayed", timeout=30_000)
    expect(page.locator("[data-field=replays]")).to_have_text("1")
    history = page.locator("#audit tbody")
    expect(history).to_contain_text("dead_letters.replay")
    expect(history).to_contain_text('"payload_corrected": true')
    expect(page.locator("#history")).to_contain_text("payload corrected")
    assert page.locator("main form[method=post]").count() == 0  # replayed: nothing to act
    operator.shot("replayed")

    # stored once, with the corrected payload; every call accounted for
    assert events_of(db, project, "poison-1") == [({"note": "fixed in the console"},)]
    s = settled(stack, project, 5)
    assert (s["stored"], s["dead_lettered"]) == (5, 0) and reconciled(s)
    operator.goto("/console")
    section = page.locator(f"section[data-project='{project.name}']")
    expect(section.locator("[data-count=stored]")).to_have_text("5")
    expect(section.locator("[data-count=dead_lettered]")).to_have_text("0")
    expect(section.locator("[data-field=reconciled]")).to_have_text("accounted for")
    operator.shot("overview-stored")


@slow
def test_a_payload_that_is_not_json_is_refused_before_it_is_sent(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"typo-{secrets.token_hex(3)}")
    queue_past_the_receiver(project, [nul_call("typo-1")], stack.servers.prefix)
    settled(stack, project, 1)
    [letter] = stack.api("GET", f"/admin/projects/{project.name}/dead-letters")["items"]

    operator.sign_in()
    page = operator.goto(f"/console/dead-letters/{letter['id']}?project={project.name}")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    area = page.locator("#edit textarea[name=payload]")
    error = page.locator("#edit .json-error")
    area.fill('{"type": "track", "event": "B",')
    page.locator("#edit button[type=submit]").click()
    expect(error).to_contain_text("Not sent")
    operator.shot("not-json-refused")
    area.fill('["an array", "is not a call"]')
    page.locator("#edit button[type=submit]").click()
    expect(error).to_contain_text("must be a JSON object")
    operator.shot("not-an-object-refused")
    assert posts == []  # nothing left the page
    page.reload()
    expect(page.locator("[data-field=status]")).to_have_text("pending")

    # the server checks it again: a page without its script, or a hand-made request
    csrf = page.locator("#edit input[name=csrf]").input_value()
    answer = page.request.post(
        stack.url + f"/console/dead-letters/{letter['id']}/replay",
        form={"csrf": csrf, "project": project.name, "payload": "{not json"},
        headers={"Accept": "application/json"},
    )
    assert (answer.status, answer.json()["code"]) == (400, "invalid_payload")
    shown = stack.api("GET", f"/admin/projects/{project.name}/dead-letters/{letter['id']}")
    assert (shown["status"], shown["edited_at"]) == ("pending", None)


@slow
def test_a_bulk_replay_runs_a_dry_run_then_a_progress_bar_to_the_total(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"bulk-{secrets.token_hex(3)}")
    queue_past_the_receiver(project, [nul_call("stays-1")], stack.servers.prefix)
    settled(stack, project, 1)
    transient_letters(db, project, 230, stack.servers.prefix)
    s = settled(stack, project, 231)
    assert s["dead_lettered"] == 231 and reconciled(s)

    operator.sign_in()
    page = operator.goto(f"/console/dead-letters?project={project.name}")
    expect(page.locator("#counts h2")).to_contain_text("231 pending")
    operator.shot("two-reasons")
    page.locator("#counts tr[data-reason=transient_exhausted] td").first.locator("a").click()
    page.wait_for_load_state()
    expect(page.locator("#counts h2")).to_contain_text("230 pending")
    expect(page.locator("#letters tbody tr[data-id]")).to_have_count(100)  # a page of 100
    operator.shot("filtered-by-reason")
    page.locator("#bulk-replay").click()
    page.wait_for_load_state()

    # the dry run: the count and a preview, nothing changed yet
    expect(page.locator("#dry-run [data-field=matched]")).to_have_text("230")
    expect(page.locator("#preview tbody tr[data-id]")).to_have_count(dead_letters.PREVIEW)
    assert stats(stack, project)["dead_lettered"] == 231
    operator.shot("dry-run")
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if r.request.method == "POST" else None)
    page.locator("#bulk button[type=submit]").click()
    bar = page.locator("#progress progress")
    expect(page.locator("#progress")).to_have_attribute("data-finished", "true", timeout=30_000)
    assert bar.get_attribute("value") == "230" and bar.get_attribute("max") == "230"
    expect(page.locator("#progress [data-field=replayed]")).to_have_text("230")
    operator.shot("progress-at-the-total")
    # three parts, each one replay of the filter: 100, 100, 30, each after the last
    parts = [a.json() for a in answers]
    assert [p["replayed"] for p in parts] == [100, 100, 30]
    assert parts[0]["last_id"] < parts[1]["last_id"] < parts[2]["last_id"]

    s = wait_for(lambda: (x := stats(stack, project))["in_flight"] == 0
                 and x["stored"] == 230 and x, timeout=60)  # fmt: skip
    assert s["dead_lettered"] == 1 and reconciled(s)
    replays = stack.api("GET", f"/admin/audit?project={project.name}")["items"]
    assert [e["count"] for e in replays if e["action"] == "dead_letters.replay"] == [30, 100, 100]

    # the one left, of the other reason: discarded in bulk, after its dry run and a confirm
    page = operator.goto(f"/console/dead-letters?project={project.name}")
    expect(page.locator("#counts h2")).to_contain_text("1 pending")
    page.locator("#bulk-discard").click()
    page.wait_for_load_state()
    expect(page.locator("#dry-run [data-field=matched]")).to_have_text("1")
    expect(page.locator("#dry-run")).to_contain_text("every pending letter")
    operator.shot("discard-dry-run")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#bulk button[type=submit]").click()
    page.wait_for_load_state()
    expect(page.locator("p.done")).to_have_text("Discarded 1 letters")
    expect(page.locator("#counts h2")).to_contain_text("0 pending")
    operator.shot("discarded")


@slow
def test_a_post_without_the_csrf_token_is_refused(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"csrf-{secrets.token_hex(3)}")
    queue_past_the_receiver(project, [nul_call("csrf-1")], stack.servers.prefix)
    settled(stack, project, 1)
    operator.sign_in()
    page = operator.goto(f"/console/dead-letters?project={project.name}")
    operator.shot("signed-in")
    [letter] = stack.api("GET", f"/admin/projects/{project.name}/dead-letters")["items"]
    for path, form in [
        ("/console/dead-letters/replay", {"project": project.name}),
        ("/console/dead-letters/discard", {"project": project.name}),
        (f"/console/dead-letters/{letter['id']}/replay", {"project": project.name}),
        (f"/console/dead-letters/{letter['id']}/discard", {"project": project.name}),
        ("/console/dead-letters/replay", {"project": project.name, "csrf": "forged"}),
    ]:
        answer = page.request.post(
            stack.url + path, form=form, headers={"Accept": "application/json"}
        )
        assert (answer.status, answer.json()["code"]) == (403, "csrf"), path
    # the session is good (the page answers), only the token was missing
    assert page.request.get(stack.url + f"/console/dead-letters?project={project.name}").ok
    shown = stack.api("GET", f"/admin/projects/{project.name}/dead-letters/{letter['id']}")
    assert (shown["status"], shown["replays"]) == ("pending", 0)


@slow
def test_rejections_and_deletions_list_what_the_api_lists_to_the_last_page(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"lists-{secrets.token_hex(3)}", webhook_secret="whsec")
    refused = [{"event": "No type", "userId": "r", "messageId": f"r-{i}"} for i in range(7)]
    refused += [{"type": "nope", "userId": "r", "messageId": f"n-{i}"} for i in range(5)]
    batch = httpx.post(stack.url + "/v1/batch", json={"batch": refused},
                       auth=(project.public_key, ""))  # fmt: skip
    assert batch.status_code == 200
    webhook = stack.url + f"/webhooks/segment/{project.public_key}"
    for i in range(3):
        body = orjson.dumps({"type": "delete", "userId": f"gone-{i}", "messageId": f"del-{i}"})
        signature = hmac.new(b"whsec", body, hashlib.sha1).hexdigest()
        answer = httpx.post(webhook, content=body, headers={"X-Signature": signature})
        assert answer.status_code == 200
    s = settled(stack, project, 15)
    assert (s["rejected"], s["stored"]) == (12, 3) and reconciled(s)
    base = f"/admin/projects/{project.name}"

    def api_ids(path: str, **query: str) -> list[int]:
        return [r["id"] for r in stack.api("GET", base + path, params=query)["items"]]

    def walk(path: str, name: str) -> list[int]:
        """Follow the page's `next` link to the last page, collecting the rows' ids."""
        page = operator.goto(path)
        seen: list[int] = []
        for number in range(1, 100):
            operator.shot(f"{name}-page-{number}")
            seen += [int(str(row.get_attribute("data-id")))
                     for row in page.locator("tbody tr[data-id]").all()]  # fmt: skip
            following = page.locator("a[rel=next]")
            if following.count() == 0:
                expect(page.locator(".pager")).to_contain_text("Last page")
                return seen
            following.click()
            page.wait_for_load_state()
        raise AssertionError("the pages never ended")

    operator.sign_in()
    listed = walk(f"/console/rejections?project={project.name}&limit=5", "rejections")
    assert listed == api_ids("/rejections", limit="1000") and len(listed) == 12
    # a raw payload is there to open
    page = operator.goto(f"/console/rejections?project={project.name}&code=unknown_type")
    first = page.locator("#rejections tbody tr[data-id]").first
    first.locator("summary").click()
    expect(first.locator("details pre")).to_contain_text('"type":"nope"')
    operator.shot("rejection-raw-payload")
    assert page.locator("#rejections tbody tr[data-id]").count() == 5
    codes = walk(f"/console/rejections?project={project.name}&code=missing_type&limit=5", "code")
    assert codes == api_ids("/rejections", code="missing_type") and len(codes) == 7

    erased = walk(f"/console/deletions?project={project.name}&limit=2", "deletions")
    assert erased == api_ids("/deletions") and len(erased) == 3
    expect(operator.page.locator("#deletions")).to_contain_text("user_id:gone-0")


# --- the operations the pages added -------------------------------------------------------


def test_a_replay_in_parts_takes_each_letter_once_and_a_letter_has_its_history(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    # a queue no worker reads: a worker finishing a replay here would race the test
    settings = Settings(DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url,
                        queue_name=f"parts-{secrets.token_hex(3)}")  # fmt: skip
    ops = Ops(db, settings, cli_actor())
    try:
        transient_letters(db, project, 5, servers.prefix)
        ids = sorted(d.id for d in dead_letters.find(ops, project.name, dead_letters.Query()).items)
        part = dead_letters.ReplayRequest(reason="transient_exhausted", limit=2)
        first = dead_letters.replay(ops, project.name, part)
        assert (first.replayed, first.last_id) == (2, ids[1])
        # a letter of the first part failing again meanwhile is pending: not taken twice
        db.execute("UPDATE dead_letters SET status = 'pending' WHERE id = %s", (ids[0],))
        second = dead_letters.replay(
            ops, project.name, part.model_copy(update={"after_id": first.last_id, "limit": 10})
        )
        assert (second.replayed, second.last_id) == (3, max(ids))
        third = dead_letters.replay(
            ops, project.name, part.model_copy(update={"after_id": second.last_id})
        )
        assert (third.replayed, third.last_id) == (0, None)

        one = dead_letters.replay(ops, project.name, dead_letters.ReplayRequest(ids=[ids[0]]))
        assert one.replayed == 1
        history = audit.list_entries(ops, 100, None, project.name, dead_letter=ids[0])
        assert [(e.action, e.selection.get("ids")) for e in history.items] == [
            ("dead_letters.replay", [ids[0]])
        ]  # the replays by filter name no id: not in a letter's history
        assert audit.list_entries(ops, 100, None, project.name, dead_letter=ids[1]).items == []
        everything = audit.list_entries(ops, 100, None, project.name).items
        # each part is in the audit log with where it started
        assert [e.selection.get("after_id") for e in everything] == [
            None, second.last_id, first.last_id, None
        ]  # fmt: skip
    finally:
        ops.close()
