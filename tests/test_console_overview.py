"""The console's overview in headless Chromium (#15): an operator signs in, a real SDK
sends calls, the counts and the chart move on the page without a reload; a viewer sees
no button that acts; a token of project A cannot open project B. Screenshots under
tests/artifacts/console/."""

from __future__ import annotations

import secrets

import console_harness as harness
import httpx
import psycopg
import pytest
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect

from ingest.store import projects

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator


def send(stack: ConsoleStack, key: str, n: int) -> None:
    """A batch from Segment's wire format, as analytics-python or any server SDK sends it."""
    batch = [{"type": "track", "event": "Viewed Pricing", "userId": f"u-{i}",
              "messageId": f"m-{secrets.token_hex(6)}"} for i in range(n)]  # fmt: skip
    answer = httpx.post(stack.url + "/v1/batch", json={"batch": batch}, auth=(key, ""))
    assert answer.status_code == 200


def test_an_operator_signs_in_and_watches_the_counts_move(
    operator: Operator, db: psycopg.Connection
) -> None:
    project = projects.create(db, f"shop-{secrets.token_hex(3)}")
    page = operator.goto("/console")
    assert "/console/login" in page.url  # signed out: sent to sign in, token never in the URL
    operator.shot("sign-in")
    operator.sign_in()
    section = page.locator(f"section[data-project='{project.name}']")
    assert section.locator("[data-count=received]").inner_text() == "0"
    operator.shot("overview-before")
    send(operator.stack, project.public_key, 25)
    # the page is not reloaded: the server-sent events move the counts
    section.locator("[data-count=stored]", has_text="25").wait_for(timeout=30_000)
    assert section.locator("[data-count=received]").inner_text() == "25"
    assert section.locator("[data-count=in_flight]").inner_text() == "0"
    assert section.locator("[data-field=reconciled]").inner_text() == "accounted for"
    assert section.locator("svg.chart rect").count() == 60
    # the worker heartbeats every KOALA_HEARTBEAT_SECONDS: alive once it has
    expect(page.locator("[data-field=workers]")).not_to_have_text("0", timeout=30_000)
    operator.shot("overview-after")


def test_a_viewer_sees_no_button_that_acts(operator: Operator, db: psycopg.Connection) -> None:
    token = operator.stack.token(f"viewer-{secrets.token_hex(3)}", "viewer")
    operator.sign_in(token)
    page = operator.page
    assert "viewer" in page.locator("header .who").inner_text()
    for path in ("/console", "/console/dead-letters", "/console/jobs", "/console/projects"):
        answer = page.goto(operator.stack.url + path)
        assert answer is not None and answer.status == 200, path
        # a signed-in viewer's only form is signing out
        actions = page.locator("main form[method=post]")
        assert actions.count() == 0, (path, actions.count())
    operator.shot("viewer-overview")


def test_a_token_of_project_a_cannot_open_project_b(
    operator: Operator, db: psycopg.Connection
) -> None:
    mine = projects.create(db, f"a-{secrets.token_hex(3)}")
    theirs = projects.create(db, f"b-{secrets.token_hex(3)}")
    token = operator.stack.token(f"op-a-{secrets.token_hex(3)}", "operator", mine.name)
    operator.sign_in(token)
    page = operator.page
    assert page.locator(f"section[data-project='{mine.name}']").count() == 1
    assert page.locator(f"section[data-project='{theirs.name}']").count() == 0
    assert theirs.name not in page.content()
    operator.shot("limited-overview")
    answer = page.goto(operator.stack.url + f"/console/dead-letters?project={theirs.name}")
    assert answer is not None and answer.status == 404
    assert theirs.name not in page.locator("main").inner_text().replace(
        f"no project named '{theirs.name}'", ""
    )
    operator.shot("other-project-refused")
    operator.forget_refusals()
