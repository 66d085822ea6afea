"""The console's companies pages in headless Chromium (issue 16, item 2): two companies'
visitors (stored through the workers' batch code) ranked by activity and by a signal,
one company's days, visitors and page views; a token of another project gets 404.
Screenshots under tests/artifacts/console/."""

from __future__ import annotations

import secrets

import console_harness as harness
import psycopg
import pytest
from console_harness import Operator
from playwright.sync_api import expect
from test_activity import two_companies

from ingest.store import projects

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator

WINDOW = "since=2026-11-10&until=2026-11-12"


def test_an_operator_ranks_companies_and_reads_one(
    operator: Operator, db: psycopg.Connection
) -> None:
    project = projects.create(db, f"co-{secrets.token_hex(3)}")
    acme, globex = two_companies(db, project)
    operator.sign_in()
    page = operator.goto(f"/console/companies?project={project.name}&{WINDOW}")
    rows = page.locator("#companies tr[data-company]")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).get_attribute("data-company") for i in range(2)] == [
        str(globex),
        str(acme),
    ]
    operator.shot("companies-by-activity")

    page.select_option("#window select[name=rank]", "signal:demo")
    page.click("#window button[type=submit]")
    page.wait_for_load_state()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("acme.com")
    expect(rows.first.locator("[data-signal=demo]")).to_have_text("demo 1")
    operator.shot("companies-by-demo")

    rows.first.locator("a").click()
    page.wait_for_load_state()
    expect(page.locator("#visitors-total")).to_have_text("2")
    expect(page.locator("#days tr[data-day]")).to_have_count(2)
    expect(page.locator("#days tr[data-day='2026-11-10']")).to_contain_text("/pricing")
    emails = page.locator("#visitors tbody").inner_text()
    assert "ann@acme.com" in emails and "bob@acme.com" in emails
    expect(page.locator("#page-views tr.page-view")).to_have_count(2)
    operator.shot("company")


def test_a_token_of_another_project_gets_404_for_its_companies(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    mine = projects.create(db, f"ca-{secrets.token_hex(3)}")
    theirs = projects.create(db, f"cb-{secrets.token_hex(3)}")
    acme, _ = two_companies(db, theirs)
    token = stack.token(f"view-c-{secrets.token_hex(3)}", "viewer", mine.name)
    operator.sign_in(token)
    page = operator.goto(f"/console/companies?project={mine.name}&{WINDOW}")
    expect(page.locator("#companies")).to_contain_text("No company active")
    for path in (
        f"/console/companies?project={theirs.name}",
        f"/console/companies/{acme}?project={theirs.name}",
        f"/console/companies/{acme}?project={mine.name}",  # B's company under A
    ):
        answer = page.goto(stack.url + path)
        assert answer is not None and answer.status == 404, path
        assert "acme.com" not in page.content()
    operator.forget_refusals()
