"""Browser senders for real: Segment's Analytics 2.0 (`@segment/analytics-next`, pinned in
tests/browser/package.json) in headless Chromium, on a page of another origin, pointed at a
real receiver with a real worker, PostgreSQL and Redis.

Skipped with a one-line reason where Chromium, npm or the pinned package cannot be had
(`.ci/run` installs Chromium; the package comes from the npm registry, never a CDN).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from browser.page import PACKAGE, UMD, Site
from chromium import chromium_or_skip, launched
from conftest import Proc, Receiver, Servers, reconciled, start_receiver, start_worker, wait_for

from ingest.embedded import EmbeddedRedis
from ingest.store import projects
from ingest.store.projects import Project

TOKEN = "browser-admin-token"
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
pytestmark = pytest.mark.slow


def analytics_next_or_skip() -> Path:
    """The pinned analytics-next from the npm registry (package-lock.json), installed once."""
    if (UMD / "standalone.js").is_file():
        return PACKAGE
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot install @segment/analytics-next for the tests")
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 or not (UMD / "standalone.js").is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"npm could not install @segment/analytics-next: {last}")
    return PACKAGE


@dataclass
class Stack:
    """A receiver and a worker on a Redis of their own (the outage test stops it)."""

    receiver: Receiver
    worker: Proc
    redis: EmbeddedRedis
    servers: Servers
    site: Site
    api: str  # HOST:PORT/v1, analytics.js's apiHost

    def admin(self, path: str) -> Any:
        answer = httpx.get(
            self.receiver.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )
        answer.raise_for_status()
        return answer.json()

    def stats(self, project: Project) -> dict[str, Any]:
        stats: dict[str, Any] = self.admin(f"/admin/projects/{project.name}/stats")
        return stats


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    chromium_or_skip()
    analytics_next_or_skip()
    tmp = tmp_path_factory.mktemp("browser")
    # persisted (AOF): a Redis stopped and started again keeps the calls it acknowledged
    redis_server = EmbeddedRedis(tmp / "redis", persist=True)
    redis_server.start()
    env = {"REDIS_URL": redis_server.url, "KOALA_KEY_CACHE_SECONDS": "1"}
    receiver = start_receiver(servers, tmp, ADMIN_TOKEN=TOKEN, **env)
    worker = start_worker(servers, tmp, name="browser", **env)
    site = Site(tmp / "screenshots")
    try:
        yield Stack(
            receiver, worker, redis_server, servers, site, receiver.url.split("//")[1] + "/v1"
        )
    finally:
        site.close()
        worker.stop()
        receiver.proc.stop()
        redis_server.stop()


@dataclass
class Console:
    """What Chromium said: console messages and the answers koala-ingest gave."""

    page: Any
    messages: list[str] = field(default_factory=list)
    answers: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    failed: list[str] = field(default_factory=list)

    def seen(self) -> Console:
        """Playwright's sync API delivers events only while Python is inside one of its
        calls: give it one before reading what was seen."""
        self.page.wait_for_timeout(50)
        return self

    def cors_errors(self) -> list[str]:
        return [m for m in self.seen().messages if "CORS" in m or "Access-Control" in m]


@pytest.fixture(scope="module")
def chromium(stack: Stack) -> Iterator[Any]:
    with launched() as browser:
        yield browser


def open_page(chromium: Any, stack: Stack, url: str, ko_id: str | None = None) -> Any:
    """A fresh visitor (own cookies and storage) on the site; returns (page, console)."""
    context = chromium.new_context()
    if ko_id:
        context.add_cookies([{"name": "ko_id", "value": ko_id, "url": stack.site.origin}])
    page = context.new_page()
    console = Console(page)
    page.on(
        "console",
        lambda m: console.messages.append(f"{m.type}: {m.text} {m.location.get('url', '')}"),
    )
    page.on("pageerror", lambda e: console.messages.append(f"pageerror: {e}"))
    api_origin = stack.receiver.url

    def answered(response: Any) -> None:
        if response.url.startswith(api_origin):
            console.answers.append((response.url[len(api_origin) :], response.status))

    page.on("response", answered)
    page.on(
        "requestfailed",
        lambda r: (
            console.failed.append(f"{r.url} {r.failure}") if r.url.startswith(api_origin) else None
        ),
    )
    page.goto(url)
    page.wait_for_function("window.analytics && window.analytics.initialized === true")
    return page, console


def events(db: psycopg.Connection, project: Project) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT type, event, name, message_id, properties, context, source"
        " FROM events WHERE project_id = %s ORDER BY id",
        (project.id,),
    ).fetchall()
    keys = ("type", "event", "name", "message_id", "properties", "context", "source")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def settled(stack: Stack, project: Project, stored: int, timeout: float = 60) -> dict[str, Any]:
    """Wait until `stored` calls are stored and nothing is in flight; check reconciliation."""

    def done() -> dict[str, Any] | None:
        s = stack.stats(project)
        return s if s["stored"] >= stored and s["in_flight"] == 0 else None

    try:
        stats: dict[str, Any] = wait_for(done, timeout=timeout, interval=0.3)  # type: ignore[assignment]
    except AssertionError:
        raise AssertionError(f"not settled: {stack.stats(project)}") from None
    assert reconciled(stats), stats
    return stats


FIVE_CALLS = """async () => {
  await analytics.identify("user-42", {email: "ann@acme.com", name: "Ann"});
  await analytics.track("Pricing Viewed", {plan: "pro"});
  await analytics.page("Docs", "Pricing", {path: "/pricing"});
  await analytics.group("acme-inc", {name: "Acme", domain: "acme.com"});
  await analytics.alias("user-42-new", "user-42");
}"""


@pytest.mark.parametrize(
    ("loader", "strategy"),
    [("snippet", "standard"), ("npm", "batching")],
)
def test_analytics_next_delivers_identify_track_page_group_alias_cross_origin(
    stack: Stack,
    chromium: Any,
    db: psycopg.Connection,
    loader: str,
    strategy: str,
) -> None:
    project = projects.create(db, f"browser-{loader}-{strategy}")
    url = stack.site.url(f"/{loader}", key=project.public_key, api=stack.api, strategy=strategy)
    campaign = "?utm_source=newsletter&utm_medium=email&utm_campaign=winter"
    page, console = open_page(chromium, stack, url + campaign.replace("?", "&"), ko_id="ko-ann")
    page.evaluate(FIVE_CALLS)
    stats = settled(stack, project, stored=5)
    assert (stats["stored"], stats["rejected"], stats["dead_lettered"]) == (5, 0, 0)
    stored = events(db, project)
    assert sorted(e["type"] for e in stored) == ["alias", "group", "identify", "page", "track"]
    paths = {path.split("?")[0] for path, _ in console.seen().answers}
    if strategy == "batching":
        assert paths == {"/v1/b"}, console.answers
    else:
        assert paths == {"/v1/i", "/v1/t", "/v1/p", "/v1/g", "/v1/a"}, console.answers
    assert all(status == 200 for _, status in console.answers), console.answers
    assert console.cors_errors() == [] and console.failed == [], console.messages
    # what a browser adds to every call reaches the store
    track = next(e for e in stored if e["type"] == "track")
    context = track["context"]
    assert context["page"]["path"] == "/" + loader
    assert context["page"]["title"] == "Pricing - Acme"
    assert context["userAgent"] and context["locale"]
    assert context["campaign"] == {"source": "newsletter", "medium": "email", "name": "winter"}
    assert context["library"]["name"] == "analytics.js"
    assert context["traits"]["profile_id"] == "ko-ann"  # the ko_id cookie, passed along
    # what a person would see of the site (kept beside the test's other output)
    page.screenshot(path=str(stack.site.shots / f"{loader}-{strategy}.png"))
    [profile] = stack.admin(f"/admin/projects/{project.name}/profiles?profile_id=ko-ann")[
        "profiles"
    ]
    assert profile["emails"] == ["ann@acme.com"]
    assert set(profile["user_ids"]) >= {"user-42"}
    page.context.close()


def test_batched_calls_still_buffered_at_page_unload_are_delivered(
    stack: Stack, chromium: Any, db: psycopg.Connection
) -> None:
    """analytics.js's batching strategy flushes what it holds when the page goes away
    (`fetch` with `keepalive`, which outlives the page), and a beacon sent on `pagehide`
    arrives too (`text/plain`, no preflight, its answer never read)."""
    project = projects.create(db, "browser-unload")
    # a batch is sent when it holds 10 calls or after a minute: only the unload sends it here
    url = stack.site.url(
        "/npm", key=project.public_key, api=stack.api, strategy="batching", timeout="60000"
    )
    page, console = open_page(chromium, stack, url)
    anonymous_id = page.evaluate("analytics.user().anonymousId()")
    page.evaluate(
        """async (anonymousId) => {
          beaconOnHide({writeKey: WRITE_KEY, anonymousId: anonymousId, event: "Page Left",
                        messageId: "beacon-" + anonymousId});
          for (let i = 0; i < 3; i++) await analytics.track("Read Section", {section: i});
        }""",
        anonymous_id,
    )
    assert console.seen().answers == []  # nothing sent yet: all 3 wait in the batch
    page.goto("about:blank")  # the page unloads with 3 calls in the batch buffer
    stats = settled(stack, project, stored=4)
    assert (stats["stored"], stats["duplicates"], stats["rejected"]) == (4, 0, 0)
    stored = events(db, project)
    assert sorted(e["event"] for e in stored) == ["Page Left"] + ["Read Section"] * 3
    assert {e["source"] for e in stored} == {"segment"}
    assert console.cors_errors() == [], console.messages
    page.context.close()


def test_calls_sent_while_redis_is_down_are_retried_by_analytics_js_and_stored_once(
    stack: Stack, chromium: Any, db: psycopg.Connection
) -> None:
    project = projects.create(db, "browser-outage")
    url = stack.site.url("/snippet", key=project.public_key, api=stack.api)
    page, console = open_page(chromium, stack, url)
    page.evaluate("analytics.track('Before Outage')")
    settled(stack, project, stored=1)
    stack.redis.stop()
    try:
        page.evaluate(
            "() => { for (let i = 0; i < 3; i++) analytics.track('During Outage', {n: i}); }"
        )
        wait_for(lambda: any(s == 503 for _, s in console.seen().answers), timeout=30)
        time.sleep(2)  # let analytics.js retry into the outage at least once more
    finally:
        stack.redis.start()  # same port, its data kept: the receiver and worker reconnect
    page.evaluate("analytics.track('After Outage')")
    stats = settled(stack, project, stored=5, timeout=120)
    assert (stats["stored"], stats["rejected"], stats["dead_lettered"]) == (5, 0, 0)
    stored = events(db, project)
    names = sorted(e["event"] for e in stored)
    assert names == ["After Outage", "Before Outage"] + ["During Outage"] * 3
    assert len({e["message_id"] for e in stored}) == 5
    refused = [s for _, s in console.seen().answers if s != 200]
    assert refused and set(refused) == {503}, console.answers
    assert console.cors_errors() == [], console.messages  # the 503 was readable
    page.context.close()


def test_a_project_with_allowed_origins_refuses_other_sites_and_takes_its_own(
    stack: Stack, chromium: Any, db: psycopg.Connection
) -> None:
    project = projects.create(db, "browser-origins", allowed_origins=["https://www.acme.com"])
    url = stack.site.url("/snippet", key=project.public_key, api=stack.api)
    page, console = open_page(chromium, stack, url)
    page.evaluate("analytics.track('From Elsewhere')")
    wait_for(lambda: ("/v1/t", 403) in console.seen().answers, timeout=30)
    stats = settled(stack, project, stored=0)
    assert (stats["received"], stats["rejected"], stats["stored"]) == (1, 1, 0)
    [rejection] = stack.admin(f"/admin/projects/{project.name}/rejections")["items"]
    assert rejection["code"] == "origin_not_allowed"
    assert "From Elsewhere" in rejection["payload"]
    # analytics.js read the 403 (CORS headers on errors too) and dropped the call
    assert console.cors_errors() == [], console.messages

    projects.set_allowed_origins(db, project.name, ["https://www.acme.com", stack.site.origin])
    time.sleep(2)  # KOALA_KEY_CACHE_SECONDS=1 in this stack
    page.evaluate("analytics.track('From Home')")
    stats = settled(stack, project, stored=1)
    assert (stats["received"], stats["rejected"], stats["stored"]) == (2, 1, 1)
    page.context.close()
