"""The console's jobs page in headless Chromium (#15): a reprocessing started from the
page (the dry run's count first, then a confirmation) runs on the worker and its progress
moves on the page to done; a queued job is cancelled from its page, and another one's
cancel shows on the list without a reload; a viewer cannot act, a token of project A
cannot open B's job; the audit log shows each action and who did it. Screenshots under
tests/artifacts/console/."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import console_harness as harness
import httpx
import psycopg
import pytest
from conftest import Servers, wait_for
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect

from ingest.config import Settings
from ingest.operations import jobs
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.store import projects

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator


def send(stack: ConsoleStack, key: str, n: int) -> None:
    batch = [{"type": "track", "event": "Viewed Pricing", "userId": f"u-{i % 7}",
              "messageId": f"m-{secrets.token_hex(6)}"} for i in range(n)]  # fmt: skip
    answer = httpx.post(stack.url + "/v1/batch", json={"batch": batch}, auth=(key, ""))
    assert answer.status_code == 200


def local(at: datetime) -> str:
    """A time as a datetime-local input takes it (UTC, as the page says)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def queued_job(servers: Servers, db: psycopg.Connection, name: str) -> int:
    """A reprocessing recorded but never handed to the workers: it stays queued."""
    ops = Ops(db, Settings(database_url=servers.database_url, redis_url=servers.redis_url),
              cli_actor())  # fmt: skip
    now = datetime.now(UTC)
    wanted = jobs.ReprocessRequest(since=now - timedelta(days=1), until=now)
    started = jobs.start_reprocess(ops, name, wanted, "cli", queue=False)
    assert started.job_id is not None
    return started.job_id


def audit_rows(page: Any, action: str) -> list[tuple[str, str]]:
    """(who, project) of each entry of this action on the audit page, newest first."""
    rows = page.locator(f"table.audit tr[data-action='{action}']").all()
    field = "[data-field={}]".format
    return [(r.locator(field("actor")).inner_text(), r.locator(field("project")).inner_text())
            for r in rows]  # fmt: skip


def test_a_reprocessing_is_counted_confirmed_and_runs_to_done_on_the_page(
    operator: Operator, db: psycopg.Connection
) -> None:
    project = projects.create(db, f"rep-{secrets.token_hex(3)}")
    stack = operator.stack
    send(stack, project.public_key, 60)
    wait_for(
        lambda: stack.api("GET", f"/admin/projects/{project.name}/stats")["stored"] == 60,
        timeout=60,
    )
    operator.sign_in()
    page = operator.goto("/console/jobs")
    form = page.locator("form#reprocess")
    form.locator("select[name=project]").select_option(project.name)
    now = datetime.now(UTC)
    form.locator("input[name=since]").fill(local(now - timedelta(days=1)))
    form.locator("input[name=until]").fill(local(now + timedelta(days=1)))
    form.locator("input[name=batch_size]").fill("3")
    operator.shot("jobs-reprocess-form")
    form.locator("button[type=submit]").click()
    # the first submit is a dry run: the count, and nothing started yet
    expect(page.locator("[data-field=events]")).to_have_text("60")
    reprocessing = stack.api("GET", "/admin/jobs?kind=reprocess&limit=1000")["items"]
    assert project.name not in [j["project"] for j in reprocessing]
    operator.shot("jobs-dry-run-count")
    page.locator("form#confirm-reprocess button[type=submit]").click()
    page.wait_for_url("**/console/jobs/*")
    assert "started" in page.locator("p.done").inner_text()
    operator.shot("job-started")
    job = page.locator("section[data-job]")
    # the page is not reloaded: its poll moves the bar, the counts and the status
    expect(job.locator("[data-field=status]")).to_have_text("done", timeout=90_000)
    expect(job.locator("progress[data-field=progress]")).to_have_attribute("value", "60")
    expect(job.locator("[data-field=done]")).to_have_text("60 / 60")
    expect(job.locator("[data-field=counts]")).to_contain_text("reprocessed 60")
    assert page.locator("form[action$='/cancel']").count() == 0
    operator.shot("job-done")
    job_id = job.get_attribute("data-job")
    assert stack.api("GET", f"/admin/jobs/{job_id}")["trigger"] == "console"
    page = operator.goto("/console/jobs?kind=reprocess")
    row = page.locator(f"tr[data-job='{job_id}']")
    expect(row.locator("[data-field=status]")).to_have_text("done")
    operator.shot("jobs-list-done")
    page = operator.goto(f"/console/audit?project={project.name}")
    assert audit_rows(page, "job.reprocess") == [("admin-token", project.name)]
    operator.shot("audit-reprocess")


def test_a_queued_job_is_cancelled_from_its_page_and_the_list_follows_a_cancel(
    operator: Operator, db: psycopg.Connection, servers: Servers
) -> None:
    mine = projects.create(db, f"cq-{secrets.token_hex(3)}")
    other = projects.create(db, f"cq-{secrets.token_hex(3)}")
    job_id = queued_job(servers, db, mine.name)
    other_id = queued_job(servers, db, other.name)
    operator.sign_in()
    page = operator.goto("/console/jobs")
    row, other_row = (page.locator(f"tr[data-job='{i}']") for i in (job_id, other_id))
    expect(row.locator("[data-field=status]")).to_have_text("queued")
    operator.shot("jobs-queued")
    # cancelled elsewhere (the API): the open list shows it without a reload
    operator.stack.api("POST", f"/admin/jobs/{other_id}/cancel")
    expect(other_row.locator("[data-field=status]")).to_have_text("cancelled", timeout=10_000)
    expect(row.locator("[data-field=status]")).to_have_text("queued")
    operator.shot("jobs-list-follows-a-cancel")
    row.locator(f"a[href='/console/jobs/{job_id}']").click()
    page.wait_for_url(f"**/console/jobs/{job_id}")
    operator.shot("job-queued")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("form[data-cancel] button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"Job {job_id} cancelled")
    expect(page.locator("[data-field=status]")).to_have_text("cancelled")
    assert page.locator("form[data-cancel]").count() == 0
    operator.shot("job-cancelled")
    page = operator.goto("/console/audit?action=job.cancel")
    assert audit_rows(page, "job.cancel")[:1] == [("admin-token", mine.name)]
    operator.shot("audit-cancel")


def test_a_viewer_cannot_cancel_and_a_token_of_a_cannot_open_a_job_of_b(
    operator: Operator, db: psycopg.Connection, servers: Servers
) -> None:
    mine = projects.create(db, f"ja-{secrets.token_hex(3)}")
    theirs = projects.create(db, f"jb-{secrets.token_hex(3)}")
    job_id, their_job = queued_job(servers, db, mine.name), queued_job(servers, db, theirs.name)
    viewer = operator.stack.token(f"jv-{secrets.token_hex(3)}", "viewer")
    operator.sign_in(viewer)
    page = operator.goto(f"/console/jobs/{job_id}")
    expect(page.locator("[data-field=status]")).to_have_text("queued")
    assert page.locator("main form[method=post]").count() == 0
    operator.shot("viewer-job")
    # a forged POST (with the session's CSRF token) is refused by the operation
    csrf = page.locator("header input[name=csrf]").get_attribute("value")
    answer = page.request.post(
        operator.stack.url + f"/console/jobs/{job_id}/cancel",
        form={"csrf": csrf or ""},
        headers={"Accept": "application/json"},
    )
    assert (answer.status, answer.json()["code"]) == (403, "forbidden")
    assert operator.stack.api("GET", f"/admin/jobs/{job_id}")["status"] == "queued"

    limited = operator.stack.token(f"ja-op-{secrets.token_hex(3)}", "operator", mine.name)
    page.context.clear_cookies()
    operator.sign_in(limited)
    page = operator.goto("/console/jobs")
    assert page.locator(f"tr[data-job='{job_id}']").count() == 1
    assert page.locator(f"tr[data-job='{their_job}']").count() == 0
    assert theirs.name not in page.content()
    operator.shot("limited-jobs")
    answer = page.goto(operator.stack.url + f"/console/jobs/{their_job}")
    assert answer is not None and answer.status == 404
    operator.shot("limited-other-job-refused")
    operator.forget_refusals()
