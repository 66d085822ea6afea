"""Company activity (issue 16, item 2): the pure rules, then the batch path on real
PostgreSQL, checked against a recount from the `events` table after each way history
changes: redelivery, a visitor joining a company later, profile and account merges,
deletion, a dead letter's replay, and reprocessing."""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from conftest import Servers, queued
from pydantic import ValidationError
from test_reprocess import run_reprocess

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.replay import _request
from ingest.signals import (
    DEFAULT_RULES,
    SignalRuleError,
    contributions,
    page_path,
    parse_rules,
    rules_text,
)
from ingest.store import activity, dead_letters
from ingest.store.projects import Project
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
RECEIVED = "2026-11-23T12:00:00.000Z"
DAY1 = "2026-11-10T09:00:00Z"
DAY2 = "2026-11-11T23:30:00Z"  # late in the UTC day
_n = itertools.count()


# --- pure rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "path"),
    [
        ({"path": "/pricing"}, "/pricing"),
        ({"path": "/pricing/"}, "/pricing"),
        ({"path": "/pricing?utm_source=ad#plans"}, "/pricing"),
        ({"path": "/"}, "/"),
        ({"path": "//"}, "/"),
        ({"path": "docs/api"}, "/docs/api"),
        ({"path": "/Docs/API"}, "/Docs/API"),  # paths are case-sensitive
        ({"url": "https://acme.com/pricing/?x=1"}, "/pricing"),
        ({"url": "https://acme.com"}, "/"),
        ({"path": "", "url": "https://acme.com/a"}, "/a"),
        ({"path": 7}, None),
        ({}, None),
        ({"path": "/" + "x" * 500}, "/" + "x" * 299),
    ],
)
def test_page_path_is_normalized_to_one_key_per_page(
    properties: dict[str, Any], path: str | None
) -> None:
    assert page_path(properties) == path


def test_default_rules_count_pricing_docs_and_demo_once_per_event() -> None:
    def signals(type_: str, event: str | None, props: dict[str, Any]) -> list[str]:
        return [k for m, k in contributions(type_, event, props, DEFAULT_RULES) if m == "signal"]

    assert signals("page", None, {"path": "/pricing/enterprise"}) == ["pricing"]
    assert signals("page", None, {"path": "/docs"}) == ["docs"]
    assert signals("page", None, {"path": "/blog/pricing"}) == []
    assert signals("track", "Demo Requested", {}) == ["demo"]
    assert signals("track", "demo requested", {}) == []  # exact event name
    assert signals("page", "Demo Requested", {"path": "/x"}) == []
    rules = parse_rules("demo=event:Demo Requested; demo=path:/demo*; any=path:*")
    assert [k for m, k in contributions("page", None, {"path": "/demo"}, rules)
            if m == "signal"] == ["any", "demo"]  # fmt: skip
    assert contributions("identify", None, {}, rules) == [("events", "")]
    assert contributions("page", None, {"path": "/a"}, ()) == [("events", ""), ("path", "/a")]
    # a page view without a path still counts, as the path ''
    assert contributions("page", None, {}, DEFAULT_RULES) == [("events", ""), ("path", "")]


def test_signal_rules_parse_and_a_bad_rule_fails_fast_in_one_line() -> None:
    rules = parse_rules(" pricing = path:/pricing* ;;demo=event:Demo: Requested, now ")
    assert [(r.name, r.kind, r.pattern) for r in rules] == [
        ("pricing", "path", "/pricing*"),
        ("demo", "event", "Demo: Requested, now"),
    ]
    assert parse_rules(rules_text(rules)) == rules
    assert parse_rules("") == ()
    for bad in ("pricing", "pricing=/pricing", "Pricing=path:/p", "x=url:/p", "x=path:",
                "x=path:pricing"):  # fmt: skip
        with pytest.raises(SignalRuleError):
            parse_rules(bad)
    assert Rules.of(Settings(signal_rules="x=event:Y")).signals == parse_rules("x=event:Y")
    assert Rules.of(Settings()).signals == DEFAULT_RULES
    with pytest.raises(ValidationError, match="signal rule 'x=url:/p'"):
        Settings(signal_rules="ok=path:/a; x=url:/p")
    # a job records the rules, and one recorded before them gets the defaults
    rules_now = Rules(frozenset(), signals=parse_rules("x=event:Y"))
    assert Rules.from_params(rules_now.as_params()).signals == rules_now.signals
    assert Rules.from_params({"blocked": [], "strip_plus_tags": False}).signals == DEFAULT_RULES


# --- the batch path, against a recount ------------------------------------------------


def call(kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"act-{next(_n)}", "receivedAt": RECEIVED,
            "timestamp": at, **fields}  # fmt: skip


def page(at: str, path: str, **ids: Any) -> dict[str, Any]:
    return call("page", at, properties={"path": path}, **ids)


def request(project: Project, *calls: dict[str, Any]) -> QueuedRequest:
    return queued(project.id, *calls, received_at=RECEIVED)


def run(db: psycopg.Connection, *requests: QueuedRequest, rules: Rules = RULES) -> Any:
    with db.transaction():
        return process(db, list(requests), rules)


# The recount: from the events table alone, in SQL (the default rules written out as
# LIKE patterns; the paths sent here carry at most a query string and a trailing slash).
RECOUNT = """
WITH e AS (
    SELECT profile_id, ("timestamp" AT TIME ZONE 'UTC')::date AS day, type, event,
           nullif(rtrim(split_part(coalesce(nullif(properties->>'path', ''),
               regexp_replace(properties->>'url', '^[a-z]+://[^/?#]*', '')), '?', 1), '/'), '')
               AS path
    FROM events WHERE project_id = %(project)s AND profile_id IS NOT NULL
)
SELECT profile_id, day, 'events', '', count(*) FROM e GROUP BY 1, 2
UNION ALL
SELECT profile_id, day, 'path', coalesce(path, '/'), count(*) FROM e WHERE type = 'page'
GROUP BY 1, 2, 4
UNION ALL
SELECT profile_id, day, 'signal', s, count(*) FROM (
    SELECT profile_id, day, CASE
        WHEN type = 'page' AND path LIKE '/pricing%%' THEN 'pricing'
        WHEN type = 'page' AND path LIKE '/docs%%' THEN 'docs'
        WHEN type = 'track' AND event = 'Demo Requested' THEN 'demo' END AS s
    FROM e) x
WHERE s IS NOT NULL GROUP BY 1, 2, 4
"""

# Per company and day, from the events and who belongs where now.
COMPANY_RECOUNT = """
SELECT coalesce(a.merged_into, a.id), ("timestamp" AT TIME ZONE 'UTC')::date,
       count(DISTINCT e.profile_id),
       count(DISTINCT e.profile_id) FILTER (WHERE EXISTS (
           SELECT 1 FROM identities i WHERE i.profile_id = e.profile_id AND i.kind = 'email')),
       count(*), count(*) FILTER (WHERE e.type = 'page')
FROM events e
JOIN profile_accounts pa ON pa.profile_id = e.profile_id
JOIN accounts a ON a.id = pa.account_id
WHERE e.project_id = %(project)s
GROUP BY 1, 2
"""


def recount(db: psycopg.Connection, project: Project) -> dict[activity.Key, int]:
    rows = db.execute(RECOUNT, {"project": project.id}).fetchall()
    return {(int(p), d, str(m), str(k)): int(n) for p, d, m, k, n in rows}


def company_by_domain(db: psycopg.Connection, project: Project, domain: str) -> int:
    row = db.execute(
        "SELECT account_id FROM account_domains WHERE project_id = %s AND domain = %s",
        (project.id, domain),
    ).fetchone()
    assert row is not None
    return int(row[0])


WINDOW = (date(2026, 11, 1), date(2026, 12, 1))


def company_view(
    db: psycopg.Connection, project: Project
) -> dict[tuple[int, date], tuple[int, ...]]:
    """What the company queries say, per company and day."""
    out: dict[tuple[int, date], tuple[int, ...]] = {}
    for company in activity.ranked(db, project.id, *WINDOW, None, 1000):
        for day in activity.company_days(db, project.id, company["account_id"], *WINDOW):
            out[(company["account_id"], day["day"])] = (
                day["visitors"], day["identified"], day["events"], day["page_views"])  # fmt: skip
    return out


def assert_recounted(db: psycopg.Connection, project: Project) -> dict[activity.Key, int]:
    stored = activity.of_project(db, project.id)
    assert stored == recount(db, project)
    rows = db.execute(COMPANY_RECOUNT, {"project": project.id}).fetchall()
    assert company_view(db, project) == {(int(a), d): tuple(rest) for a, d, *rest in rows}
    return stored


def test_activity_equals_a_recount_through_redelivery_merges_and_deletion(
    db: psycopg.Connection, project: Project
) -> None:
    first = request(
        project,
        page(DAY1, "/pricing", anonymousId="a1"),
        page(DAY1, "/pricing/?utm_source=ad", anonymousId="a1"),
        page(DAY2, "/docs/api", anonymousId="a1"),
        call("identify", DAY1, userId="u1", anonymousId="a1", traits={"email": "ann@acme.com"}),
        call("identify", DAY1, userId="u2", traits={"email": "bob@eu.acme.com"}),
        call("track", DAY2, userId="u2", event="Demo Requested"),
        call("track", DAY2, userId="u2", event="Signed Up"),
        call("identify", DAY1, userId="u3", traits={"email": "dee@globex.io"}),
        page(DAY1, "/", userId="u3"),
        call("page", DAY2, userId="u3", properties={"url": "https://globex.io/pricing?x=1"}),
        page(DAY1, "/pricing", anonymousId="a9"),  # nobody's company
        call("identify", DAY1, userId="u4", traits={"email": "cy@gmail.com"}),
    )
    run(db, first)
    stored = assert_recounted(db, project)
    acme = company_by_domain(db, project, "acme.com")
    globex = company_by_domain(db, project, "globex.io")
    days = {d["day"]: d for d in activity.company_days(db, project.id, acme, *WINDOW)}
    assert days[date(2026, 11, 10)]["signals"] == {"pricing": 2}
    assert days[date(2026, 11, 10)]["top_paths"] == [{"path": "/pricing", "views": 2}]
    assert days[date(2026, 11, 11)]["signals"] == {"docs": 1, "demo": 1}
    assert (days[date(2026, 11, 11)]["visitors"], days[date(2026, 11, 10)]["visitors"]) == (2, 2)
    ranked = activity.ranked(db, project.id, *WINDOW, None, 10)
    assert [(c["account_id"], c["events"], c["visitors"], c["identified"]) for c in ranked] == [
        (acme, 7, 2, 2),
        (globex, 3, 1, 1),
    ]
    by_pricing = activity.ranked(db, project.id, *WINDOW, "pricing", 10)
    assert [(c["account_id"], c["value"]) for c in by_pricing] == [(acme, 2), (globex, 1)]
    assert [c["account_id"] for c in activity.ranked(db, project.id, *WINDOW, "demo", 10)] == [acme]

    # the same batch delivered again: all duplicates, nothing counted twice
    assert run(db, first).total("duplicates") == 12
    assert activity.of_project(db, project.id) == stored

    # an anonymous visitor's history, then their work email: they join acme with it
    run(db, request(project, page(DAY1, "/docs", anonymousId="a5"),
                    page(DAY2, "/docs/x/", anonymousId="a5")))  # fmt: skip
    run(db, request(project, call("identify", DAY2, anonymousId="a5", userId="u5",
                                  traits={"email": "cy@acme.com"})))  # fmt: skip
    assert_recounted(db, project)
    assert {v["email"] for v in activity.company_visitors(db, project.id, acme, *WINDOW)} == {
        "ann@acme.com",
        "bob@eu.acme.com",
        "cy@acme.com",
    }

    # two existing profiles merge: an anonymous visitor with history is dee
    run(db, request(project, page(DAY2, "/pricing", anonymousId="a7"),
                    call("track", DAY2, anonymousId="a7", event="Demo Requested")))  # fmt: skip
    run(db, request(project, call("identify", DAY2, userId="u3", anonymousId="a7")))
    stored = assert_recounted(db, project)
    demo = activity.ranked(db, project.id, *WINDOW, "demo", 10)
    assert {(c["account_id"], c["value"]) for c in demo} == {(acme, 1), (globex, 1)}

    # a group account of acme's domain merges acme's work-email company into it
    run(db, request(project, call("group", DAY2, userId="u6", groupId="g-acme",
                                  traits={"website": "acme.com", "name": "Acme"})))  # fmt: skip
    assert activity.of_project(db, project.id) != stored  # u6's group call counts
    assert_recounted(db, project)
    survivor = company_by_domain(db, project, "acme.com")
    assert survivor != acme
    top = activity.ranked(db, project.id, *WINDOW, None, 10)[0]
    assert (top["account_id"], top["name"], top["visitors"]) == (survivor, "Acme", 4)

    # deleting a person removes their share
    run(db, request(project, call("delete", DAY2, userId="u2")))
    assert_recounted(db, project)
    assert activity.ranked(db, project.id, *WINDOW, "demo", 10)[0]["account_id"] == globex
    assert "bob@eu.acme.com" not in {
        v["email"] for v in activity.company_visitors(db, project.id, survivor, *WINDOW)
    }
    views = activity.recent_page_views(db, project.id, survivor, 3)
    assert [v["path"] for v in views] == ["/docs/x/", "/docs/api", "/docs"]


def test_a_replayed_dead_letter_counts_once(db: psycopg.Connection, project: Project) -> None:
    bad = page(DAY2, "/pricing", userId="u1")
    fixed_id = bad.pop("messageId")  # a call without a messageId is a dead letter
    run(db, request(project, call("identify", DAY1, userId="u1",
                                  traits={"email": "ann@initech.com"}), bad))  # fmt: skip
    before = assert_recounted(db, project)
    [letter] = dead_letters.claim_for_replay(db, dead_letters.Filter(project_id=project.id), 10)
    letter["payload"] = {**letter["payload"], "messageId": fixed_id}  # fixed by an operator
    replay = _request(letter)
    assert run(db, replay).total("stored") == 1
    after = assert_recounted(db, project)
    assert len(after) == len(before) + 3  # DAY2: events, path, signal
    assert after[next(k for k in after if k[2] == "signal")] == 1
    run(db, replay)  # a second copy of the replay: a duplicate
    assert activity.of_project(db, project.id) == after


def test_reprocessing_keeps_activity_equal_to_a_recount(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    # history stored without `+tag` stripping: two profiles of one person
    run(db, request(
        project,
        call("identify", DAY1, userId="u1", traits={"email": "ann@hooli.com"}),
        page(DAY1, "/pricing", userId="u1"),
        call("identify", DAY1, anonymousId="a2", traits={"email": "ann+news@hooli.com"}),
        page(DAY2, "/docs", anonymousId="a2"),
        call("track", DAY2, anonymousId="a2", event="Demo Requested"),
    ))  # fmt: skip
    assert_recounted(db, project)
    assert len({k[0] for k in activity.of_project(db, project.id)}) == 2
    stripping = Rules(RULES.blocked, strip_plus_tags=True)
    run_reprocess(servers, db, project, stripping)
    stored = assert_recounted(db, project)
    assert len({k[0] for k in stored}) == 1  # one person now, with both days
    run_reprocess(servers, db, project, stripping)  # a second pass changes nothing
    assert activity.of_project(db, project.id) == stored


def test_reprocessing_applies_changed_signal_rules_to_history(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    run(db, request(project, call("identify", DAY1, userId="u1",
                                  traits={"email": "ann@umbrella.com"}),
                    page(DAY1, "/careers/open", userId="u1")))  # fmt: skip
    assert not [k for k in activity.of_project(db, project.id) if k[2] == "signal"]
    hiring = Rules(RULES.blocked, signals=parse_rules("hiring=path:/careers*"))
    run_reprocess(servers, db, project, hiring)
    signals = {k[3]: n for k, n in activity.of_project(db, project.id).items() if k[2] == "signal"}
    assert signals == {"hiring": 1}


# --- the surfaces: CLI (the admin API's tests are in test_admin_api.py) ----------------


def two_companies(db: psycopg.Connection, project: Project) -> tuple[int, int]:
    """acme.com (two visitors, a demo request) and globex.io (one, more page views)."""
    run(db, request(
        project,
        call("identify", DAY1, userId="u1", traits={"email": "ann@acme.com"}),
        page(DAY1, "/pricing", userId="u1"),
        call("track", DAY2, userId="u1", event="Demo Requested"),
        page(DAY2, "/docs", anonymousId="a2"),
        call("identify", DAY2, anonymousId="a2", traits={"email": "bob@acme.com"}),
        call("identify", DAY1, userId="u3", traits={"email": "dee@globex.io"}),
        *(page(DAY2, f"/blog/{i}", userId="u3") for i in range(4)),
    ))  # fmt: skip
    return company_by_domain(db, project, "acme.com"), company_by_domain(db, project, "globex.io")


@pytest.fixture
def cli(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """The `koala-ingest` command run in this process (typer's runner: no interpreter
    start per command), with this run's servers."""
    from typer.testing import CliRunner

    from ingest.cli import app
    from ingest.config import get_settings

    for key, value in servers.env().items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        out = runner.invoke(app, list(args))
        return subprocess.CompletedProcess(list(args), out.exit_code, out.stdout, out.stderr)

    yield invoke
    get_settings.cache_clear()


def test_cli_lists_companies_by_activity_and_by_signal_and_shows_one(
    cli: Callable[..., subprocess.CompletedProcess[str]], db: psycopg.Connection, project: Project
) -> None:
    acme, globex = two_companies(db, project)
    window = ("--since", "2026-11-10", "--until", "2026-11-12")
    listed = cli("companies", "list", project.name, *window, "--json")
    assert listed.returncode == 0, listed.stderr
    page_ = json.loads(listed.stdout)
    assert [(c["company"]["id"], c["events"], c["visitors"]) for c in page_["items"]] == [
        (globex, 5, 1),
        (acme, 5, 2),
    ]  # a tie on events: the newer company first
    by_demo = json.loads(
        cli("companies", "list", project.name, *window, "--rank", "signal:demo", "--json").stdout
    )
    assert [(c["company"]["domain"], c["value"]) for c in by_demo["items"]] == [("acme.com", 1)]
    shown = cli("companies", "show", project.name, str(acme), *window)
    assert shown.returncode == 0, shown.stderr
    for text in ("acme.com", "ann@acme.com", "bob@acme.com", "/pricing", "demo 1"):
        assert text in shown.stdout
    bad = cli("companies", "list", project.name, "--rank", "signal:nope")
    assert bad.returncode == 2 and "no signal 'nope'" in bad.stderr
    missing = cli("companies", "show", project.name, "999999999")
    assert missing.returncode == 1 and "no company 999999999" in missing.stderr


def test_a_batch_tally_adds_up_each_events_contributions() -> None:
    from datetime import UTC, datetime

    rules = parse_rules("demo=event:Demo Requested; demo=event:Booked; a=event:Booked; "
                        "p=path:/p*")  # fmt: skip
    at = datetime(2026, 11, 10, 23, 59, tzinfo=UTC)
    items = [
        (1, at, "track", "Booked", {}),
        (1, at, "track", "Other", {}),
        (1, at, "page", None, {"path": "/p/1"}),
        (2, at, "identify", None, {}),
        (2, at, "track", "Demo Requested", {}),
        (None, at, "track", "Booked", {}),  # no profile: counted nowhere
    ]
    expected: dict[activity.Key, int] = {}
    for profile, ts, type_, event, props in items:
        if profile is None:
            continue
        for metric, key in contributions(type_, event, props, rules):
            k = (profile, ts.date(), metric, key)
            expected[k] = expected.get(k, 0) + 1
    assert dict(activity.tally(items, rules)) == expected
    assert expected[(1, at.date(), "signal", "demo")] == 1
    assert expected[(1, at.date(), "signal", "a")] == 1
