"""The console's projects and tokens pages in headless Chromium (#15): a project created
in the page takes calls with its key; a key rotated with a grace of 2 s is taken beside the
new one, then refused; the webhook secret is set and never shown back; origins are set;
Koala's acceptance rule is set to identified; company domain exceptions are set; the
project is revoked. A viewer token made
in the page is shown once (in the form's answer, never in an address), signs in elsewhere
and sees no button that acts; revoked, that session ends. The audit log shows each of these
and who did it. Screenshots under tests/artifacts/console/."""

from __future__ import annotations

import secrets
from typing import Any

import console_harness as harness
import httpx
import pytest
from conftest import wait_for
from console_harness import ConsoleStack, Operator
from playwright.sync_api import expect

from ingest.console.projects import PAGE_SIZE

pytestmark = pytest.mark.slow
chromium, console_stack, operator = harness.chromium, harness.console_stack, harness.operator


def status_of(stack: ConsoleStack, key: str) -> int:
    """What a server SDK gets for one track call sent with this write key."""
    call = {"type": "track", "event": "Signed Up", "userId": "ann",
            "messageId": f"m-{secrets.token_hex(6)}"}  # fmt: skip
    return httpx.post(stack.url + "/v1/track", json=call, auth=(key, "")).status_code


def audit_rows(page: Any, action: str) -> list[tuple[str, str]]:
    """(who, project) of each entry of this action on the audit page, newest first."""
    rows = page.locator(f"table.audit tr[data-action='{action}']").all()
    field = "[data-field={}]".format
    return [(r.locator(field("actor")).inner_text(), r.locator(field("project")).inner_text())
            for r in rows]  # fmt: skip


def test_a_project_is_created_rotated_configured_and_revoked_in_the_page(
    operator: Operator,
) -> None:
    stack, name = operator.stack, f"web-{secrets.token_hex(3)}"
    # more projects than one page of the list holds: the one made below is not on the
    # first page, and every action must still come back to it
    filler = secrets.token_hex(3)
    for i in range(PAGE_SIZE):
        stack.api("POST", "/admin/projects", json={"name": f"filler-{filler}-{i}"})
    operator.sign_in()
    page = operator.goto("/console/projects")
    operator.shot("projects")
    create = page.locator("form#create-project")
    create.locator("input[name=name]").fill(name)
    create.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"Project {name} created")
    section = page.locator(f"section[data-project='{name}']")
    old_key = section.locator("[data-field=public_key]").inner_text()
    assert section.locator("[data-field=webhook_secret]").inner_text() == "none"
    assert section.locator("[data-field=allowed_origins]").inner_text() == "any"
    operator.shot("project-created")
    assert status_of(stack, old_key) == 200  # a new project's key works at once

    rotate = section.locator("form.rotate")
    rotate.locator("input[name=grace_seconds]").fill("2")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.url.endswith("/rotate-key")) as rotated:
        rotate.locator("button[type=submit]").click()
    assert rotated.value.status == 303
    # the old key is still taken during its 2 s of grace (asked at once: the page of
    # every project the run made can take a while to render on a loaded machine)...
    assert status_of(stack, old_key) == 200
    expect(page.locator("p.done")).to_contain_text(f"Key of {name} rotated")
    section = page.locator(f"section[data-project='{name}']")
    new_key = section.locator("[data-field=public_key]").inner_text()
    assert new_key != old_key
    assert section.locator("[data-field=previous_public_key]").inner_text() == old_key
    assert status_of(stack, new_key) == 200  # ...beside the new one
    operator.shot("key-rotated")
    # ...then the old one is refused (grace 2 s, receivers' key cache 1 s)
    wait_for(lambda: status_of(stack, old_key) == 401, timeout=20, interval=0.5)
    assert status_of(stack, new_key) == 200

    secret = f"whsec-{secrets.token_hex(8)}"
    form = section.locator("form.webhook-secret")
    form.locator("input[name=secret]").fill(secret)
    form.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"Webhook secret of {name} set")
    section = page.locator(f"section[data-project='{name}']")
    assert section.locator("[data-field=webhook_secret]").inner_text() == "set"
    assert secret not in page.content() and secret not in page.url
    assert section.locator("form.webhook-secret input[name=secret]").input_value() == ""
    operator.shot("webhook-secret-set")

    origins = section.locator("form.origins")
    origins.locator("input[name=origins]").fill("https://www.acme.com https://*.acme.com")
    origins.locator("input[name=any]").uncheck()
    origins.locator("button[type=submit]").click()
    section = page.locator(f"section[data-project='{name}']")
    expect(section.locator("[data-field=allowed_origins]")).to_have_text(
        "https://www.acme.com https://*.acme.com"
    )
    operator.shot("origins-set")

    assert section.locator("[data-field=accept]").inner_text() == "all calls"
    accept = section.locator("form.accept")
    accept.locator("select[name=accept]").select_option("identified")
    accept.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"{name} accepts identified calls")
    section = page.locator(f"section[data-project='{name}']")
    expect(section.locator("[data-field=accept]")).to_contain_text("identified only")
    # a track call without an email or profile_id is now refused (receivers' cache: 1 s)
    wait_for(lambda: status_of(stack, new_key) == 400, timeout=20, interval=0.5)
    operator.shot("accept-identified")

    assert section.locator("[data-field=company_domains]").inner_text() == (
        "the deployment's lists"
    )
    domains = section.locator("form.company-domains")
    domains.locator("input[name=free]").fill("isp.example, ISP2.example")
    domains.locator("input[name=work]").fill("fastmail.com")
    domains.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(
        f"Company domains of {name}: free isp.example isp2.example; work fastmail.com"
    )
    section = page.locator(f"section[data-project='{name}']")
    expect(section.locator("[data-field=company_domains]")).to_have_text(
        "no company: isp.example isp2.example; always a company: fastmail.com"
    )

    clear = section.locator("form.clear-secret")
    page.once("dialog", lambda dialog: dialog.accept())
    clear.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"Webhook secret of {name} cleared")
    section = page.locator(f"section[data-project='{name}']")
    assert section.locator("[data-field=webhook_secret]").inner_text() == "none"

    page.once("dialog", lambda dialog: dialog.accept())
    section.locator("form.revoke button[type=submit]").click()
    expect(page.locator("p.done")).to_have_text(f"Project {name} revoked")
    assert page.locator(f"section[data-project='{name}']").count() == 0
    operator.shot("project-revoked")
    wait_for(lambda: status_of(stack, new_key) == 401, timeout=20, interval=0.5)

    page = operator.goto("/console/audit")
    operator.shot("audit-projects")
    for action in ("project.create", "project.rotate_key", "project.webhook_secret",
                   "project.allowed_origins", "project.accept", "project.company_domains",
                   "project.revoke"):  # fmt: skip
        assert ("admin-token", name) in audit_rows(page, action), action
    assert secret not in page.content()


def test_a_viewer_token_made_in_the_page_is_shown_once_and_revoked_ends_its_session(
    operator: Operator, chromium: Any
) -> None:
    stack, name = operator.stack, f"viewer-{secrets.token_hex(3)}"
    operator.sign_in()
    page = operator.goto("/console/projects#tokens")
    form = page.locator("form#create-token")
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=role]").select_option("viewer")
    operator.shot("token-form")
    form.locator("button[type=submit]").click()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("kt_")
    assert token not in page.url  # the answer to the POST, not a redirect
    operator.shot("token-shown-once")
    page = operator.goto("/console/projects")
    row = page.locator(f"tr[data-token='{name}']")
    assert row.locator("td").nth(1).inner_text() == "viewer"
    assert token not in page.content()  # never again

    # the viewer, in a browser of its own
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        viewer = Operator(context.new_page(), stack, operator.folder)
        viewer.page.on("pageerror", lambda e: viewer.errors.append(f"pageerror: {e}"))
        viewer.shots = 100  # its screenshots after the operator's, apart
        viewer.sign_in(token)
        assert "viewer" in viewer.page.locator("header .who").inner_text()
        for path in ("/console/projects", "/console/jobs", "/console/audit"):
            viewer.goto(path)
            assert viewer.page.locator("main form[method=post]").count() == 0, path
            assert viewer.page.locator("main button.danger").count() == 0, path
        viewer.shot("viewer-projects-no-actions")

        page.once("dialog", lambda dialog: dialog.accept())
        row.locator("form button[type=submit]").click()
        expect(page.locator("p.done")).to_have_text(f"Token {name} revoked")
        operator.shot("token-revoked")
        # its session ends with it: the next page sends it to sign in
        viewer.goto("/console/projects")
        assert "/console/login" in viewer.page.url
        viewer.shot("viewer-signed-out")
        assert viewer.errors == []
    finally:
        context.close()

    page = operator.goto("/console/audit?action=token.create")
    assert audit_rows(page, "token.create")[:1] == [("admin-token", "every project")]
    operator.shot("audit-token-create")
    page = operator.goto("/console/audit?action=token.revoke")
    assert audit_rows(page, "token.revoke")[:1] == [("admin-token", "every project")]
    assert name in page.locator("table.audit").inner_text()


def test_an_operator_of_project_a_sees_only_a_and_may_not_make_tokens(
    operator: Operator,
) -> None:
    stack = operator.stack
    mine, theirs = (f"pa-{secrets.token_hex(3)}", f"pb-{secrets.token_hex(3)}")
    for name in (mine, theirs):
        stack.api("POST", "/admin/projects", json={"name": name})
    limited = stack.token(f"pa-op-{secrets.token_hex(3)}", "operator", mine)
    operator.sign_in(limited)
    page = operator.goto("/console/projects")
    assert page.locator(f"section[data-project='{mine}'] form.rotate").count() == 1
    assert page.locator(f"section[data-project='{theirs}']").count() == 0
    assert theirs not in page.content()
    # no new project, no tokens: those span every project
    assert page.locator("form#create-project").count() == 0
    assert page.locator("#tokens").count() == 0
    operator.shot("limited-projects")
    page = operator.goto("/console/audit")
    assert theirs not in page.content()
    csrf = page.locator("header input[name=csrf]").get_attribute("value")
    answer = page.goto(stack.url + f"/console/audit?project={theirs}")
    assert answer is not None and answer.status == 404
    operator.shot("limited-audit-other-refused")
    # a forged form for B (with this session's CSRF token) is refused like an unknown one
    forged = page.request.post(
        stack.url + f"/console/projects/{theirs}/revoke",
        form={"csrf": csrf or ""},
        headers={"Accept": "application/json"},
    )
    assert (forged.status, forged.json()["code"]) == (404, "unknown_project")
    operator.forget_refusals()
