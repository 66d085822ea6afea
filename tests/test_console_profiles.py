"""The console's profiles pages in headless Chromium (#15): a visitor identified and
tracked (calls in Segment's wire format, as a server SDK sends them, over httpx) is found
by email; its page shows its identifiers, traits, company, Engage audience history, the
merge an alias call made and the merge the guard refused, the identity graph as an SVG,
and its events paged to the end; a viewer sees no form that acts; a token of project A
gets 404 for project B. Screenshots under tests/artifacts/console/."""

from __future__ import annotations

import secrets
from typing import Any

import console_harness as harness
import httpx
import psycopg
import pytest
from conftest import reconciled, wait_for
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect

from ingest.store import projects
from ingest.store.projects import Project

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator


def send(stack: ConsoleStack, project: Project, *calls: dict[str, Any]) -> None:
    """One batch in Segment's wire format, then wait until the worker has finished it."""
    batch = [{"messageId": f"m-{secrets.token_hex(6)}", **c} for c in calls]
    answer = httpx.post(
        stack.url + "/v1/batch", json={"batch": batch}, auth=(project.public_key, "")
    )
    assert answer.status_code == 200, answer.text

    def settled() -> dict[str, Any] | None:
        s: dict[str, Any] = stack.api("GET", f"/admin/projects/{project.name}/stats")
        return s if s["in_flight"] == 0 else None

    assert reconciled(wait_for(settled, timeout=30, interval=0.2))  # type: ignore[arg-type]


def test_an_operator_finds_a_visitor_by_email_and_reads_its_profile(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    project = projects.create(db, f"prof-{secrets.token_hex(3)}")
    # Ann arrives anonymous, identifies, joins a company and browses
    send(
        stack,
        project,
        {"type": "page", "name": "Pricing", "anonymousId": "anon-ann"},
        {"type": "identify", "anonymousId": "anon-ann", "userId": "u-ann",
         "traits": {"email": "Ann@Acme.com", "name": "Ann", "plan": "pro"}},
        {"type": "group", "userId": "u-ann", "groupId": "acme",
         "traits": {"name": "Acme Inc", "domain": "acme.com"}},
        *[{"type": "track", "userId": "u-ann", "event": f"Viewed Doc {i}",
           "properties": {"doc": i}} for i in range(30)],
    )  # fmt: skip
    # she browsed on a second device first; an alias call ties it to her
    send(stack, project, {"type": "track", "anonymousId": "anon-laptop", "event": "Opened App"})
    send(stack, project, {"type": "alias", "previousId": "anon-laptop", "userId": "u-ann"})
    # Bob is someone else; a call naming both u-ann and Bob's email is kept apart
    send(
        stack, project, {"type": "identify", "userId": "u-bob", "traits": {"email": "bob@acme.com"}}
    )
    send(stack, project, {"type": "identify", "userId": "u-ann", "messageId": "shared-laptop",
                          "traits": {"email": "bob@acme.com"}})  # fmt: skip
    # Engage put her in an audience and took her out, twice (calls arriving out of order)
    engage = {
        "personas": {
            "computation_class": "audience",
            "computation_key": "trial_users",
            "computation_id": "aud_7",
            "space_id": "spa_1",
            "namespace": "spa_1",
        }
    }
    send(stack, project, *[
        {"type": "identify", "userId": "u-ann", "traits": {"trial_users": entered},
         "context": engage, "timestamp": f"2026-11-{day:02d}T09:00:00Z"}
        for day, entered in ((5, False), (1, True), (9, True), (12, False))])  # fmt: skip

    operator.sign_in()
    page = operator.goto("/console/profiles")
    operator.shot("lookup-empty")
    page.select_option("#lookup select[name=project]", project.name)
    page.select_option("#lookup select[name=kind]", "email")
    page.fill("#lookup input[name=value]", "ANN@acme.com")  # normalized as the workers do
    page.click("#lookup button[type=submit]")
    rows = page.locator("#found tr[data-profile]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("ann@acme.com")
    operator.shot("lookup-by-email")

    rows.first.locator("a").click()
    page.wait_for_load_state()
    expect(page.locator("h1")).to_contain_text("Profile")
    ids = page.locator("#identifiers")
    expect(ids.locator("tr[data-kind=email] td")).to_have_text(["ann@acme.com"])
    expect(ids.locator("tr[data-kind=user_id] td")).to_have_text(["u-ann"])
    # the alias moved the laptop's identifier and events into her profile
    anonymous = ids.locator("tr[data-kind=anonymous_id] td").all_inner_texts()
    assert {"anon-ann", "anon-laptop"} <= set(anonymous), anonymous
    expect(page.locator("#traits")).to_contain_text("Ann")
    expect(page.locator("#companies")).to_contain_text("Acme Inc")
    transitions = page.locator("#audiences tr.transition[data-audience=trial_users]")
    expect(transitions).to_have_count(4)
    assert [t.split("\t")[-4:-2] for t in transitions.all_inner_texts()] == [
        ["entered", "2026-11-01 09:00:00"], ["exited", "2026-11-05 09:00:00"],
        ["entered", "2026-11-09 09:00:00"], ["exited", "2026-11-12 09:00:00"],
    ], transitions.all_inner_texts()  # fmt: skip
    expect(page.locator("#audiences")).to_contain_text("not a member")
    merges = page.locator("#merges tr.merge")
    expect(merges).to_have_count(1)
    refused = page.locator("#merges tr.refused")
    expect(refused).to_have_count(1)
    expect(refused.first).to_contain_text("shared-laptop")
    # the identity graph: her identifiers around her, the merged and refused profiles
    svg = page.locator("#graph svg.identity")
    assert svg.locator("g.node.identifier").count() >= 4
    assert svg.locator("g.node.profile").count() == 1
    assert svg.locator("line.edge.merge").count() == 1
    assert svg.locator("line.edge.refused").count() == 1
    assert svg.locator("g.node.refused a").count() == 1  # Bob's profile, one click away
    operator.shot("profile")

    # her events, newest first, paged with the cursor to the end
    total = int(page.locator("section dl dd").first.inner_text())
    seen = page.locator("#events tr.event").all_inner_texts()
    pages = 1
    while page.locator("#events a[rel=next]").count():
        page.click("#events a[rel=next]")
        page.wait_for_load_state()
        pages += 1
        operator.shot(f"events-page-{pages}")
        seen += page.locator("#events tr.event").all_inner_texts()
    expect(page.locator("#events-end")).to_be_visible()
    assert pages >= 2 and len(seen) == total and len(set(seen)) == total, (pages, total)
    assert sum("Opened App" in row for row in seen) == 1  # the laptop's event moved too

    # the profile the guard kept apart opens from the graph
    svg = page.locator("#graph svg.identity")
    page.goto(stack.url + str(svg.locator("g.node.refused a").get_attribute("href")))
    expect(page.locator("#identifiers tr[data-kind=email] td")).to_have_text(["bob@acme.com"])
    expect(page.locator("#merges tr.refused")).to_have_count(1)
    operator.shot("refused-profile")


def test_a_viewer_reads_profiles_and_a_limited_token_gets_404_elsewhere(
    operator: Operator, db: psycopg.Connection
) -> None:
    stack = operator.stack
    mine = projects.create(db, f"pa-{secrets.token_hex(3)}")
    theirs = projects.create(db, f"pb-{secrets.token_hex(3)}")
    send(stack, mine, {"type": "identify", "userId": "u-v", "traits": {"email": "v@a.com"}})
    send(stack, theirs, {"type": "identify", "userId": "u-w", "traits": {"email": "w@b.com"}})
    [other] = stack.api("GET", f"/admin/projects/{theirs.name}/profiles?user_id=u-w")["profiles"]
    token = stack.token(f"view-a-{secrets.token_hex(3)}", "viewer", mine.name)
    operator.sign_in(token)
    page = operator.goto(f"/console/profiles?project={mine.name}&kind=user_id&value=u-v")
    expect(page.locator("#found tr[data-profile]")).to_have_count(1)
    assert page.locator("main form[method=post]").count() == 0
    assert theirs.name not in page.content()  # not even in the project picker
    page.locator("#found tr[data-profile] a").click()
    page.wait_for_load_state()
    expect(page.locator("#identifiers")).to_contain_text("v@a.com")
    assert page.locator("main form[method=post]").count() == 0
    operator.shot("viewer-profile")
    for path in (
        f"/console/profiles?project={theirs.name}&kind=user_id&value=u-w",
        f"/console/profiles/{other['id']}?project={theirs.name}",
        f"/console/profiles/{other['id']}?project={mine.name}",  # B's profile under A
    ):
        answer = page.goto(stack.url + path)
        assert answer is not None and answer.status == 404, path
        assert "w@b.com" not in page.content()
    operator.shot("other-project-refused")
    # Chromium logs each 404 document it was asked for: those were the point here
    operator.forget_refusals()
