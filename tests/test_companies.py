"""Companies from work email domains (issue 16, item 1): the pure rule, then the batch
path on real PostgreSQL."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest
from conftest import Servers, queued
from pydantic import ValidationError
from test_reprocess import run_reprocess

from ingest.companies import company_domain, company_of_host
from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.store.accounts import Holder
from ingest.store.projects import Project
from workers.companies import decide
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
RECEIVED = "2026-11-23T12:00:00.000Z"
_n = itertools.count()


@pytest.mark.parametrize(
    ("email", "company"),
    [
        ("ann@acme.com", "acme.com"),
        ("ann@eu.acme.co.uk", "acme.co.uk"),  # subdomain under a two-label public suffix
        ("bob@mail.eu.acme.co.uk", "acme.co.uk"),
        ("ann@acme.com.au", "acme.com.au"),
        ("ann@sales.acme.com.au", "acme.com.au"),
        ("Ann@EU.Acme.CO.UK", "acme.co.uk"),
        ("ann@acme.com.", "acme.com"),  # fully qualified
        ("ann@gmail.com", None),  # free mail
        ("ann@googlemail.com", None),
        ("ann@outlook.com", None),
        ("ann@hotmail.co.uk", None),
        ("ann@yahoo.com", None),
        ("ann@yahoo.co.uk", None),
        ("ann@proton.me", None),
        ("ann@mailinator.com", None),  # disposable
        ("ann@0815.ru", None),
        ("ann@bücher.de", "xn--bcher-kva.de"),  # IDN: one company in its ASCII form
        ("ann@xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("ann@shop.bücher.de", "xn--bcher-kva.de"),
        ("ann@co.uk", None),  # a public suffix is nobody's company
        ("ann@com", None),
        ("ann@localhost", None),
        ("ann@", None),
        ("not an email", None),
        ("", None),
        (None, None),
        ("ann@acme..com", None),
        ("ann@-acme.com", None),
        ("ann@ac me.com", None),
        ("ann@acme.com/path", None),
    ],
)
def test_company_domain(email: str | None, company: str | None) -> None:
    assert company_domain(email, RULES) == company


def test_settings_add_free_domains_and_work_exceptions() -> None:
    rules = Rules(
        frozenset(),
        company_extra_free_domains=frozenset({"example.org"}),
        company_work_domains=frozenset({"hey.com", "fastmail.com"}),
    )
    assert company_domain("ann@example.org", rules) is None
    assert company_domain("ann@staff.example.org", rules) is None  # subdomains too
    assert company_domain("ann@fastmail.com", RULES) is None  # free mail by the list...
    assert company_domain("ann@fastmail.com", rules) == "fastmail.com"  # ...but theirs
    assert company_of_host("www.Acme.co.uk", rules) == "acme.co.uk"


def test_settings_read_the_domain_lists_and_refuse_a_non_domain() -> None:
    settings = Settings(
        company_extra_free_domains=" example.org, Bücher.de ,", company_work_domains="hey.com"
    )
    assert settings.company_extra_free_domains == ("example.org", "xn--bcher-kva.de")
    rules = Rules.of(settings)
    assert rules.company_work_domains == frozenset({"hey.com"})
    # a job records the normalization rules; suppression is not one (reprocessing ignores it)
    assert Rules.from_params(rules.as_params()) == dataclasses.replace(rules, suppress_days=0)
    assert Rules.from_params({"blocked": [], "strip_plus_tags": False}).company_work_domains == (
        frozenset()
    )  # a job recorded before these rules
    with pytest.raises(ValidationError, match="not a domain name"):
        Settings(company_work_domains="acme.com, not a domain")


def test_the_lists_are_read_from_the_packages_without_any_network() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network used')\n"
        "socket.socket = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from ingest.companies import company_domain\n"
        "from ingest.identifiers import Rules\n"
        "r = Rules(frozenset())\n"
        "assert company_domain('a@eu.acme.co.uk', r) == 'acme.co.uk'\n"
        "assert company_domain('a@gmail.com', r) is None\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "ok", out.stderr


def test_decide_merges_a_work_email_company_into_the_group_account() -> None:
    found = decide(
        carried={"acme.com": [(10, "g-1")]}, held={"acme.com": Holder(5, True)}, created={}
    )
    assert found.owner == {"acme.com": 10}
    assert [(m.from_account, m.into_account, m.message_id) for m in found.merges] == [
        (5, 10, "g-1")
    ]
    # two groupIds with one domain: the newcomer joins the domain's first company
    found = decide(
        carried={"acme.com": [(11, "g-2")]}, held={"acme.com": Holder(10, False)}, created={}
    )
    assert found.owner == {"acme.com": 10}
    assert [(m.from_account, m.into_account) for m in found.merges] == [(11, 10)]
    # chains within a batch end on the survivor
    found = decide(
        carried={"a.com": [(1, None)], "b.com": [(1, None), (2, None)]},
        held={"a.com": Holder(3, False)},
        created={},
    )
    (survivor,) = set(found.owner.values())
    assert {m.from_account for m in found.merges} == {1, 2, 3} - {survivor}
    assert {m.into_account for m in found.merges} == {survivor}


# --- the batch path on real PostgreSQL ---------------------------------------------------


def call(kind: str, **fields: Any) -> dict[str, Any]:
    out = {"type": kind, "messageId": f"co-{next(_n)}", "receivedAt": RECEIVED}
    out.update(fields)
    return out


def identify(user: str, email: str) -> dict[str, Any]:
    return call("identify", userId=user, traits={"email": email})


def request(project: Project, *calls: dict[str, Any], source: str = "segment") -> QueuedRequest:
    return queued(project.id, *calls, source=source, received_at=RECEIVED)


def run(db: psycopg.Connection, *requests: QueuedRequest) -> Any:
    with db.transaction():
        return process(db, list(requests), RULES)


def companies(db: psycopg.Connection, project: Project) -> dict[str, list[str]]:
    """Company (domain or groupId) -> the emails of its visitors, for live accounts."""
    rows = db.execute(
        """
        SELECT coalesce(d.domain, a.group_id), i.value
        FROM accounts a
        LEFT JOIN account_domains d ON d.account_id = a.id
        LEFT JOIN profile_accounts pa ON pa.account_id = a.id
        LEFT JOIN identities i ON i.profile_id = pa.profile_id AND i.kind = 'email'
        WHERE a.project_id = %s AND a.merged_into IS NULL
        ORDER BY 1, 2
        """,
        (project.id,),
    ).fetchall()
    out: dict[str, list[str]] = {}
    for company, email in rows:
        out.setdefault(company, [])
        if email:
            out[company].append(email)
    return out


def snapshot(db: psycopg.Connection, project: Project) -> list[Any]:
    """The company tables, less their times (a group call refreshes `updated_at`)."""
    tables = {
        "accounts": "id, group_id, domain, name, traits, merged_into",
        "account_domains": "domain, account_id",
        "account_merges": "id, from_account, into_account, domain, reason, message_id",
        "profile_accounts": "profile_id, account_id",
    }
    return [
        db.execute(
            f"SELECT {columns} FROM {table} WHERE project_id = %s ORDER BY 1, 2", (project.id,)
        ).fetchall()
        for table, columns in tables.items()
    ]


def test_visitors_of_one_work_domain_land_in_one_company(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            identify("u1", "ann@acme.co.uk"),
            identify("u2", "bob@eu.acme.co.uk"),
            identify("u3", "cy@gmail.com"),
            identify("u4", "dee@mailinator.com"),
            identify("u5", "eve@other.com.au"),
            call("track", userId="u6", event="Viewed", properties={"email": "fay@x.other.com.au"}),
        ),
    )
    # a later batch, another subdomain, and a Koala-source visitor
    run(db, request(project, identify("u7", "gus@uk.acme.co.uk")))
    run(
        db,
        request(
            project,
            {"type": "identify", "message_id": "k-1", "email": "hal@ACME.co.uk",
             "sent_at": RECEIVED, "receivedAt": RECEIVED},
            source="koala",
        ),
    )  # fmt: skip
    assert companies(db, project) == {
        "acme.co.uk": [
            "ann@acme.co.uk",
            "bob@eu.acme.co.uk",
            "gus@uk.acme.co.uk",
            "hal@acme.co.uk",
        ],
        "other.com.au": ["eve@other.com.au", "fay@x.other.com.au"],
    }
    # free-mail and disposable visitors are in no company
    free = db.execute(
        """
        SELECT count(*) FROM profile_accounts pa JOIN identities i ON i.profile_id = pa.profile_id
        WHERE i.kind = 'email' AND i.value IN ('cy@gmail.com', 'dee@mailinator.com')
        """
    ).fetchone()
    assert free == (0,)


def test_a_group_account_and_a_work_email_company_of_one_domain_are_one_company(
    db: psycopg.Connection, project: Project
) -> None:
    # email first: a company without a groupId; then the group call with its website
    run(db, request(project, identify("u1", "ann@eu.acme.com")))
    run(
        db,
        request(
            project,
            call("group", userId="u9", groupId="g-acme",
                 traits={"name": "Acme", "website": "https://www.acme.com/about"}),
        ),
    )  # fmt: skip
    run(db, request(project, identify("u2", "bob@acme.com")))
    assert companies(db, project) == {"acme.com": ["ann@eu.acme.com", "bob@acme.com"]}
    live = db.execute(
        "SELECT group_id, name FROM accounts WHERE project_id = %s AND merged_into IS NULL",
        (project.id,),
    ).fetchall()
    assert live == [("g-acme", "Acme")]
    merges = db.execute(
        "SELECT domain, reason FROM account_merges WHERE project_id = %s", (project.id,)
    ).fetchall()
    assert merges == [("acme.com", "same_domain")]
    # the group call's visitor (no email) is in the company too
    members = db.execute(
        """
        SELECT count(*) FROM profile_accounts pa JOIN accounts a ON a.id = pa.account_id
        WHERE a.project_id = %s AND a.group_id = 'g-acme'
        """,
        (project.id,),
    ).fetchone()
    assert members == (3,)

    # group first: a later groupId with the same domain joins the domain's company, and
    # its group calls keep finding it
    run(
        db,
        request(
            project,
            call("group", userId="u8", groupId="g-acme-2", traits={"domain": "sales.acme.com"}),
        ),
    )
    run(db, request(project, call("group", userId="u7", groupId="g-acme-2")))
    assert list(companies(db, project)) == ["acme.com"]
    assert db.execute(
        "SELECT count(*) FROM profile_accounts pa JOIN accounts a ON a.id = pa.account_id"
        " WHERE a.project_id = %s AND a.group_id = 'g-acme'",
        (project.id,),
    ).fetchone() == (5,)


def test_group_and_work_emails_in_one_batch_and_koala_account(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            identify("u1", "ann@acme.io"),
            call("group", userId="u1", groupId="g-1", traits={"domain": "acme.io"}),
            identify("u2", "bob@hq.acme.io"),
        ),
    )
    run(
        db,
        request(
            project,
            {"type": "identify", "message_id": "k-2", "email": "cy@acme.io",
             "traits": {"$account": {"domain": "acme.io", "name": "Acme IO"}},
             "sent_at": RECEIVED, "receivedAt": RECEIVED},
            source="koala",
        ),
    )  # fmt: skip
    assert companies(db, project) == {"acme.io": ["ann@acme.io", "bob@hq.acme.io", "cy@acme.io"]}


def test_a_second_delivery_of_the_same_batch_changes_nothing(
    db: psycopg.Connection, project: Project
) -> None:
    req = request(
        project,
        identify("u1", "ann@eu.acme.de"),
        identify("u2", "bob@acme.de"),
        call("group", userId="u3", groupId="g-9", traits={"website": "acme.de"}),
        identify("u4", "cy@gmail.com"),
    )
    run(db, req)
    before = snapshot(db, project)
    again = run(db, req)
    assert again.total("duplicates") == 4
    assert snapshot(db, project) == before
    assert companies(db, project) == {"acme.de": ["ann@eu.acme.de", "bob@acme.de"]}


def test_reprocessing_derives_companies_for_stored_history(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    # history stored while acme.com counted as free mail (as if before this feature)
    before = Rules(RULES.blocked, company_extra_free_domains=frozenset({"acme.com"}))
    at = "2026-11-11T10:00:00.000Z"
    history = [
        call("identify", userId="u1", traits={"email": "ann@eu.acme.com"}, timestamp=at),
        call("identify", userId="u2", traits={"email": "bob@acme.com"}, timestamp=at),
        call("group", userId="u3", groupId="g-7", traits={"website": "acme.com"}, timestamp=at),
    ]
    with db.transaction():
        process(db, [queued(project.id, *history, received_at=RECEIVED)], before)
    assert companies(db, project) == {"g-7": []}  # the group account only, no domain

    run_reprocess(servers, db, project, RULES)
    assert companies(db, project) == {"acme.com": ["ann@eu.acme.com", "bob@acme.com"]}
    state = snapshot(db, project)
    run_reprocess(servers, db, project, RULES)  # a second pass changes nothing
    assert snapshot(db, project) == state


def test_two_batches_naming_one_new_domain_at_once_make_one_company(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    first = request(project, identify("u1", "ann@newco.io"))
    second = request(project, identify("u2", "bob@eu.newco.io"))
    with psycopg.connect(servers.database_url) as a, psycopg.connect(servers.database_url) as b:
        process(a, [first], RULES)  # in its open transaction: holds the domain's lock
        done = threading.Event()

        def other() -> None:
            process(b, [second], RULES)
            b.commit()
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert not done.wait(0.5)  # waits for the first batch's company
        a.commit()
        thread.join(timeout=30)
        assert done.is_set()
    assert companies(db, project) == {"newco.io": ["ann@newco.io", "bob@eu.newco.io"]}


# --- a project's own exceptions ------------------------------------------------------------


def test_a_projects_own_free_and_work_domains_apply_to_that_project_alone(
    db: psycopg.Connection, project: Project
) -> None:
    from ingest.operations import projects as project_ops
    from ingest.operations.actor import Actor
    from ingest.operations.context import Ops
    from ingest.store import projects as project_rows
    from workers.project_rules import ProjectRules

    other = project_rows.create(db, f"p-{next(_n)}-other")
    ops = Ops(db, Settings(), Actor("test:ann", "operator"))
    # isp.example: a regional ISP (no company here); fastmail.com is on the free-mail list,
    # but a company of this project's customers uses it as its own domain
    done = project_ops.set_company_domains(
        ops, project.name, ["ISP.example", "isp.example"], ["fastmail.com"]
    )
    assert (done.company_free_domains, done.company_work_domains) == (
        ["isp.example"], ["fastmail.com"],
    )  # fmt: skip
    now = [0.0]
    cache = ProjectRules(10.0, clock=lambda: now[0])
    rules = cache.rules(db, RULES)

    def calls() -> list[dict[str, Any]]:
        return [
            identify("u1", "ann@isp.example"),
            identify("u2", "bob@mail.isp.example"),  # its subdomains too
            identify("u3", "cy@fastmail.com"),
            identify("u4", "dee@acme.com"),
        ]

    with db.transaction():  # one batch, both projects: each with its own rules
        process(db, [request(project, *calls()), request(other, *calls())], rules)
    assert companies(db, project) == {
        "acme.com": ["dee@acme.com"],
        "fastmail.com": ["cy@fastmail.com"],
    }
    assert companies(db, other) == {
        "acme.com": ["dee@acme.com"],
        "isp.example": ["ann@isp.example", "bob@mail.isp.example"],
    }

    # a change reaches the worker when its cache is KOALA_KEY_CACHE_SECONDS old, not before
    project_ops.set_company_domains(ops, other.name, ["acme.com"], [])
    assert cache.rules(db, RULES).for_project(other.id).company_extra_free_domains == frozenset()
    now[0] = 10.0
    assert cache.rules(db, RULES).for_project(other.id).company_extra_free_domains == {"acme.com"}
    audited = db.execute(
        "SELECT actor, selection FROM audit_log WHERE project_id = %s"
        " AND action = 'project.company_domains'",
        (project.id,),
    ).fetchall()
    assert audited == [
        ("test:ann", {"free": ["isp.example"], "work": ["fastmail.com"],
                      "before": {"free": [], "work": []}}),
    ]  # fmt: skip
    ops.close()


def test_a_projects_free_domain_wins_over_the_deployments_work_domain() -> None:
    from ingest.identifiers import CompanyDomains

    deployment = Rules(
        RULES.blocked,
        company_work_domains=frozenset({"hey.com", "fastmail.com"}),
        projects={7: CompanyDomains(free=frozenset({"hey.com"}))},
    )
    assert company_domain("ann@hey.com", deployment.for_project(7)) is None
    assert company_domain("ann@hey.com", deployment.for_project(8)) == "hey.com"
    assert company_domain("ann@fastmail.com", deployment.for_project(7)) == "fastmail.com"
    assert deployment.for_project(8) is deployment  # no exceptions: nothing rebuilt


def test_company_domains_refuse_a_non_domain_a_domain_in_both_lists_and_a_viewer(
    db: psycopg.Connection, project: Project
) -> None:
    from ingest.operations import projects as project_ops
    from ingest.operations.actor import Actor
    from ingest.operations.context import Ops
    from ingest.operations.errors import Forbidden, Invalid

    ops = Ops(db, Settings(), Actor("test:ann", "operator"))
    for free, work in (
        (["not a domain"], []),
        ([], ["localhost"]),
        (["acme.com"], ["ACME.com"]),
        ([], ["acme.com/x"]),
    ):
        with pytest.raises(Invalid) as error:
            project_ops.set_company_domains(ops, project.name, free, work)
        assert error.value.code == "invalid_domain"
    viewer = Ops(db, Settings(), Actor("token:vic", "viewer"))
    with pytest.raises(Forbidden):
        project_ops.set_company_domains(viewer, project.name, ["isp.example"], [])
    found = project_ops.get(viewer, project.name)
    assert (found.company_free_domains, found.company_work_domains) == ([], [])
    ops.close()
    viewer.close()


def test_the_cli_shows_sets_and_clears_a_projects_company_domains(
    servers: Servers, project: Project
) -> None:
    from conftest import koala

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            koala("projects", "company-domains", project.name, *args),
            env=servers.env(), capture_output=True, text=True,
        )  # fmt: skip

    done = cli("--free", "isp.example", "--free", "isp2.example", "--work", "hey.com")
    assert done.returncode == 0, done.stderr
    assert f"{project.name}: free isp.example isp2.example" in done.stdout
    assert f"{project.name}: work hey.com" in done.stdout
    assert cli("--free", "bad domain").returncode == 2  # Invalid: exit 2, nothing changed
    cleared = cli("--clear")
    assert f"{project.name}: free (none)" in cleared.stdout


def _live_accounts(db: psycopg.Connection, project: Project) -> list[Any]:
    return db.execute(
        "SELECT group_id, name, domain, traits FROM accounts"
        " WHERE project_id = %s AND merged_into IS NULL",
        (project.id,),
    ).fetchall()


def test_a_group_account_merged_away_fills_what_the_survivor_lacks(
    db: psycopg.Connection, project: Project
) -> None:
    # the domain's first company: no name, a plan
    run(db, request(project, call("group", userId="u1", groupId="g-acme",
                                  traits={"website": "acme.com", "plan": "pro"})))  # fmt: skip
    # a second groupId of that domain merges into it, carrying a name and more traits
    run(
        db,
        request(
            project,
            call("group", userId="u2", groupId="g-acme-eu",
                 traits={"name": "Acme EU", "domain": "eu.acme.com", "plan": "free",
                         "seats": 40}),
        ),
    )  # fmt: skip
    # the survivor's own values win; what it lacked comes from the merged one
    assert _live_accounts(db, project) == [
        ("g-acme", "Acme EU", "acme.com",
         {"website": "acme.com", "plan": "pro", "name": "Acme EU", "domain": "eu.acme.com",
          "seats": 40}),
    ]  # fmt: skip


def test_several_group_accounts_merged_at_once_fill_the_survivor_oldest_first(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            call("group", userId="u1", groupId="g-a", traits={"domain": "acme.org"}),
            call("group", userId="u2", groupId="g-b",
                 traits={"domain": "acme.org", "name": "Acme B", "tier": "b"}),
            call("group", userId="u3", groupId="g-c",
                 traits={"domain": "www.acme.org", "name": "Acme C", "tier": "c", "c": 1}),
        ),
    )  # fmt: skip
    # g-a (the lowest id) survives; on a clash the older merged account (g-b) wins
    assert _live_accounts(db, project) == [
        ("g-a", "Acme B", "acme.org",
         {"domain": "acme.org", "name": "Acme B", "tier": "b", "c": 1}),
    ]  # fmt: skip
    assert companies(db, project) == {"acme.org": []}


def test_a_reprocessing_applies_the_projects_exceptions_to_its_history(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    from datetime import UTC, datetime

    import redis
    from test_reprocess import SINCE, UNTIL

    from ingest.operations import jobs as job_ops
    from ingest.operations import projects as project_ops
    from ingest.operations.actor import Actor
    from ingest.operations.context import Ops
    from workers.jobs import Context
    from workers.jobs.runner import Runner

    at = "2026-11-11T10:00:00.000Z"
    assert SINCE <= datetime(2026, 11, 11, 10, tzinfo=UTC) < UNTIL
    run(db, request(project,
                    call("identify", userId="u1", traits={"email": "ann@fastmail.com"},
                         timestamp=at)))  # fmt: skip
    assert companies(db, project) == {}  # free mail by the list
    settings = Settings(database_url=servers.database_url, redis_url=servers.redis_url)
    ops = Ops(db, settings, Actor("test:ann", "operator"))
    project_ops.set_company_domains(ops, project.name, [], ["fastmail.com"])
    started = job_ops.start_reprocess(
        ops, project.name, job_ops.ReprocessRequest(since=SINCE, until=UNTIL), "api", queue=False
    )
    ops.close()
    assert started.job_id is not None
    # the worker's context has the deployment's rules only: the job's recorded ones apply
    ctx = Context(settings, RULES, lambda: redis.Redis.from_url(servers.redis_url))
    runner = Runner(lambda: psycopg.connect(servers.database_url), ctx)
    assert runner.run(started.job_id) == "done"
    assert companies(db, project) == {"fastmail.com": ["ann@fastmail.com"]}
