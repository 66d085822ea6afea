"""The console's live debugger in headless Chromium (#15): a site's real analytics.js
(analytics-next, the pinned npm package, tests/browser/) sends calls and they arrive on
the page without a reload, stored; the same messageId twice shows a duplicate, a call the
receiver refuses shows rejected with its code, a poison call a dead letter with its
reason (those three over httpx, as a server SDK or an older queue would send them);
Pause stops new rows (they wait, counted) until Resume; a click shows the payload.
Screenshots under tests/artifacts/console/."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import console_harness as harness
import httpx
import psycopg
import pytest
from browser.page import Site
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect
from test_browser import analytics_next_or_skip
from test_dead_letters import queue_past_the_receiver

from ingest.store import projects
from ingest.store.projects import Project

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator
WAIT = 30_000  # ms: a worker finishes a batch well within it


@pytest.fixture(scope="module")
def site(console_stack: ConsoleStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    analytics_next_or_skip()
    shop = Site(tmp_path_factory.mktemp("debugger-site"))
    try:
        yield shop
    finally:
        shop.close()


def post(stack: ConsoleStack, project: Project, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(stack.url + path, json=body, auth=(project.public_key, ""), timeout=10)


def test_calls_arrive_with_their_outcome_pause_holds_them_and_a_click_shows_the_payload(
    operator: Operator, chromium: Any, site: Site, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"dbg-{secrets.token_hex(3)}")
    operator.sign_in()
    page = operator.goto(f"/console/debugger?project={project.name}")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("live")
    operator.shot("debugger-empty")

    # a visitor on the shop's site: Segment's analytics.js sends to koala-ingest
    visitor = chromium.new_context()
    shop = visitor.new_page()
    api = stack.url.split("//")[1] + "/v1"
    shop.goto(site.url("/snippet", key=project.public_key, api=api))
    shop.wait_for_function("window.analytics && window.analytics.initialized === true")
    shop.evaluate(
        """async () => {
          await analytics.identify("user-7", {email: "kim@shop.test"});
          await analytics.track("Added To Cart", {sku: "tee-42"});
        }"""
    )
    calls = page.locator("#calls tr.call")
    cart = calls.filter(has_text="Added To Cart")
    expect(cart).to_have_count(1, timeout=WAIT)  # no reload: the stream brought it
    expect(cart).to_have_attribute("data-outcome", "stored")
    expect(calls.filter(has_text="identify")).to_have_attribute("data-outcome", "stored")
    operator.shot("sdk-calls-stored")

    # the same messageId twice: the second is a duplicate
    twice = {"type": "track", "event": "Paid", "userId": "user-7", "messageId": "pay-1"}
    assert post(stack, project, "/v1/track", twice).status_code == 200
    expect(calls.filter(has_text="Paid")).to_have_count(1, timeout=WAIT)
    assert post(stack, project, "/v1/track", twice).status_code == 200
    paid = calls.filter(has_text="Paid")
    expect(paid).to_have_count(2, timeout=WAIT)
    expect(paid.first).to_have_attribute("data-outcome", "duplicate")  # newest on top
    expect(paid.last).to_have_attribute("data-outcome", "stored")
    # a batch item the receiver refuses: rejected, with its code
    bad = {"type": "track", "event": "", "userId": "user-7", "messageId": "empty-event"}
    assert post(stack, project, "/v1/batch", {"batch": [bad]}).status_code == 200
    rejected = page.locator("#calls tr.call[data-outcome=rejected]")
    expect(rejected).to_have_count(1, timeout=WAIT)
    expect(rejected.locator("td").nth(2)).to_have_text("missing_event")
    # a call PostgreSQL cannot hold (a NUL, queued as an older receiver did): dead letter
    poison = {"type": "track", "event": "Poisoned", "userId": "user-7",
              "messageId": "poison-7", "properties": {"note": "nul\u0000byte"}}  # fmt: skip
    queue_past_the_receiver(project, [poison])
    dead = page.locator("#calls tr.call[data-outcome=dead_letter]")
    expect(dead).to_have_count(1, timeout=WAIT)
    expect(dead).to_contain_text("poison-7")
    assert dead.locator("td").nth(2).inner_text().strip() != ""  # its reason
    operator.shot("every-outcome")

    # Pause: new calls wait aside, counted, until Resume
    page.click("#pause")
    expect(page.locator("#live-state")).to_have_text("paused")
    shop.evaluate('async () => { await analytics.track("While Paused"); }')
    expect(page.locator("#waiting")).to_have_text("1 new call waiting", timeout=WAIT)
    expect(calls.filter(has_text="While Paused")).to_have_count(0)
    operator.shot("paused")
    page.click("#pause")
    expect(calls.filter(has_text="While Paused")).to_have_count(1)
    expect(page.locator("#waiting")).to_have_text("")
    operator.shot("resumed")

    # a click on a call shows its payload, as received
    cart.click()
    payload = page.locator("#calls tr.payload:not([hidden])")
    expect(payload).to_have_count(1)
    expect(payload).to_contain_text('"sku": "tee-42"')
    expect(payload).to_contain_text('"event": "Added To Cart"')
    operator.shot("payload")
    cart.click()
    expect(page.locator("#calls tr.payload:not([hidden])")).to_have_count(0)

    # a reload shows the same calls, rendered by the server
    page.reload()
    expect(page.locator("#calls tr.call")).to_have_count(calls.count())
    expect(page.locator("#calls tr.call[data-outcome=dead_letter]")).to_have_count(1)
    visitor.close()


def test_a_viewer_watches_and_a_limited_token_gets_404_for_another_project(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    mine = projects.create(db, f"da-{secrets.token_hex(3)}")
    theirs = projects.create(db, f"db-{secrets.token_hex(3)}")
    token = stack.token(f"dbg-view-{secrets.token_hex(3)}", "viewer", mine.name)
    operator.sign_in(token)
    page = operator.goto(f"/console/debugger?project={mine.name}")
    assert page.locator("main form[method=post]").count() == 0
    assert theirs.name not in page.content()
    call = {"type": "track", "event": "Seen By Viewer", "userId": "v1"}
    assert post(stack, mine, "/v1/track", call).status_code == 200
    expect(page.locator("#calls tr.call", has_text="Seen By Viewer")).to_have_count(1, timeout=WAIT)
    operator.shot("viewer-debugger")
    for path in (
        f"/console/debugger?project={theirs.name}",
        f"/console/debugger/stream?project={theirs.name}",
    ):
        answer = page.goto(stack.url + path)
        assert answer is not None and answer.status == 404, path
    operator.shot("other-project-refused")
    operator.forget_refusals()
    # the admin API says the same
    answer = httpx.get(
        stack.url + f"/admin/projects/{theirs.name}/debugger",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_project"
