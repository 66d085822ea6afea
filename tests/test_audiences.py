"""Engage audiences and computed traits (issue 16, item 4): the pure rule, then the batch
path on real PostgreSQL (merges, deletion, redelivery, reprocessing), the operations and
the admin API."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from conftest import Servers, queued
from test_reprocess import run_reprocess

from ingest.audiences import Computation, computation
from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS, Settings
from ingest.identifiers import Rules
from ingest.operations import audiences, profiles
from ingest.operations.actor import cli_actor
from ingest.operations.context import Ops
from ingest.store.projects import Project
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
RECEIVED = "2026-11-23T12:00:00.000Z"
_n = itertools.count()
SPACE = "spa_9xQ2"
AUDIENCE = "order_completed_last_30days"


def personas(key: str, cls: str = "audience", cid: str = "aud_1x") -> dict[str, Any]:
    return {"personas": {"computation_class": cls, "computation_key": key,
                         "computation_id": cid, "space_id": SPACE, "namespace": SPACE}}  # fmt: skip


def call(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"aud-{next(_n)}", "receivedAt": RECEIVED, **fields}


def engage(user: str, entered: bool, at: str, key: str = AUDIENCE, **extra: Any) -> dict[str, Any]:
    """The identify call Engage sends when `user` enters (true) or exits (false)."""
    return call("identify", userId=user, traits={key: entered, **extra}, context=personas(key),
                timestamp=at)  # fmt: skip


def run(db: psycopg.Connection, project: Project, *calls: dict[str, Any],
        source: str = "segment") -> Any:  # fmt: skip
    with db.transaction():
        return process(db, [queued(project.id, *calls, source=source, received_at=RECEIVED)],
                       RULES)  # fmt: skip


def ops(db: psycopg.Connection, servers: Servers) -> Ops:
    return Ops(db, Settings(DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url),
               cli_actor())  # fmt: skip


def profile_of(db: psycopg.Connection, project: Project, user: str) -> int:
    row = db.execute(
        "SELECT profile_id FROM identities WHERE project_id = %s AND kind = 'user_id'"
        " AND value = %s",
        (project.id, user),
    ).fetchone()
    assert row is not None
    return int(row[0])


def history(db: psycopg.Connection, servers: Servers, project: Project, user: str) -> Any:
    return profiles.detail(ops(db, servers), project.name, profile_of(db, project, user))


def engage_rows(db: psycopg.Connection, project: Project) -> list[Any]:
    return db.execute(
        "SELECT message_id, profile_id, kind, key, entered, value, computation_id, space_id, at"
        " FROM engage_computations WHERE project_id = %s ORDER BY message_id",
        (project.id,),
    ).fetchall()


# --- the pure rule -------------------------------------------------------------------------


def test_an_engage_identify_is_an_audience_membership_or_a_computed_trait() -> None:
    entered = computation("identify", None, {AUDIENCE: True}, {}, personas(AUDIENCE))
    assert entered == Computation("audience", AUDIENCE, True, True, "aud_1x", SPACE, SPACE)
    exited = computation("identify", None, {AUDIENCE: False}, {}, personas(AUDIENCE))
    assert exited is not None and exited.entered is False
    trait = computation("identify", None, {"ltv": 99.5}, {}, personas("ltv", "trait", "tra_2"))
    assert trait == Computation("trait", "ltv", 99.5, None, "tra_2", SPACE, SPACE)
    # Engage's event destinations: track "Audience Entered" / "Audience Exited"
    props = {"audience_key": AUDIENCE, AUDIENCE: True}
    via_track = computation("track", "Audience Entered", {}, props, personas(AUDIENCE))
    assert via_track is not None and via_track.entered is True
    out = computation(
        "track", "Audience Exited", {}, {"audience_key": AUDIENCE}, personas(AUDIENCE)
    )
    assert out is not None and out.entered is False


@pytest.mark.parametrize(
    ("kind", "event", "traits", "context"),
    [
        ("identify", None, {AUDIENCE: True}, {}),  # not from Engage
        ("identify", None, {AUDIENCE: True}, {"personas": "x"}),
        ("identify", None, {AUDIENCE: True}, personas(AUDIENCE, cls="journey")),
        ("identify", None, {AUDIENCE: "maybe"}, personas(AUDIENCE)),  # no membership to tell
        ("identify", None, {"other": True}, personas(AUDIENCE)),  # its key is not there
        ("identify", None, {"other": 1}, personas("ltv", "trait")),
        ("track", "Order Completed", {}, personas(AUDIENCE)),  # an ordinary event
        ("page", None, {AUDIENCE: True}, personas(AUDIENCE)),
    ],
)
def test_calls_that_are_not_engage_computations(
    kind: str, event: str | None, traits: dict[str, Any], context: dict[str, Any]
) -> None:
    assert computation(kind, event, traits, {}, context) is None


# --- the batch path on real PostgreSQL ---------------------------------------------------


def test_an_audience_entered_and_exited_twice_shows_four_dated_transitions(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    run(db, project, call("identify", userId="ann", traits={"email": "ann@acme.com"}))
    run(db, project, engage("ann", True, "2026-11-01T10:00:00Z"))
    run(db, project, engage("ann", False, "2026-11-05T10:00:00Z"),
        engage("ann", True, "2026-11-09T10:00:00Z"))  # fmt: skip
    run(db, project, engage("ann", False, "2026-11-12T10:00:00Z"))
    found = history(db, servers, project, "ann")
    [membership] = found.audiences
    assert membership.key == AUDIENCE and membership.member is False
    assert (membership.computation_id, membership.space_id) == ("aud_1x", SPACE)
    assert [(t.entered, t.at.isoformat()) for t in membership.transitions] == [
        (True, "2026-11-01T10:00:00+00:00"),
        (False, "2026-11-05T10:00:00+00:00"),
        (True, "2026-11-09T10:00:00+00:00"),
        (False, "2026-11-12T10:00:00+00:00"),
    ]
    # the trait itself is the latest value, as any trait
    assert found.profile.traits[AUDIENCE] is False


def test_a_repeated_state_is_no_transition_and_a_late_call_lands_by_its_timestamp(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    run(db, project, engage("bob", True, "2026-11-01T10:00:00Z"))
    run(db, project, engage("bob", True, "2026-11-02T10:00:00Z"))  # a re-sync: same state
    run(db, project, engage("bob", True, "2026-11-10T10:00:00Z"))
    run(db, project, engage("bob", False, "2026-11-05T10:00:00Z"))  # late: it came first
    [membership] = history(db, servers, project, "bob").audiences
    assert [(t.entered, t.at.day) for t in membership.transitions] == [
        (True, 1), (False, 5), (True, 10)]  # fmt: skip
    assert membership.member is True
    assert len(engage_rows(db, project)) == 4  # every call is kept


def test_an_exit_at_the_same_instant_as_an_entering_wins_everywhere(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    at = "2026-11-01T10:00:00Z"
    run(db, project, engage("ben", False, at), engage("ben", True, at))
    [membership] = history(db, servers, project, "ben").audiences
    assert [t.entered for t in membership.transitions] == [True, False]
    assert membership.member is False
    context = ops(db, servers)
    now = audiences.members(context, project.name, AUDIENCE, audiences.MembersQuery())
    assert now.items == []
    [listed] = audiences.find(context, project.name, audiences.Query()).items
    assert (listed.members, listed.profiles) == (0, 1)


def test_a_second_delivery_of_the_same_batch_adds_nothing(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    batch = [
        engage("cy", True, "2026-11-01T10:00:00Z"),
        engage("cy", False, "2026-11-03T10:00:00Z"),
    ]
    run(db, project, *batch)
    before = engage_rows(db, project)
    again = run(db, project, *batch)  # a redelivery, or a replay of the same calls
    assert again.total("duplicates") == 2
    assert engage_rows(db, project) == before
    [membership] = history(db, servers, project, "cy").audiences
    assert len(membership.transitions) == 2


def test_a_merge_moves_the_history_to_the_surviving_profile(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    # Engage knows the visitor by an anonymous id first, then by userId; alias joins them
    first = call("identify", anonymousId="anon-1", traits={AUDIENCE: True},
                 context=personas(AUDIENCE), timestamp="2026-11-01T10:00:00Z")  # fmt: skip
    run(db, project, first)
    run(db, project, engage("dee", False, "2026-11-04T10:00:00Z"))
    anon = db.execute(
        "SELECT profile_id FROM identities WHERE project_id = %s AND value = 'anon-1'",
        (project.id,),
    ).fetchone()
    assert anon is not None and anon[0] != profile_of(db, project, "dee")
    run(db, project, call("alias", userId="dee", previousId="anon-1"))
    survivor = profile_of(db, project, "dee")
    assert {r[1] for r in engage_rows(db, project)} == {survivor}
    [membership] = history(db, servers, project, "dee").audiences
    assert [t.entered for t in membership.transitions] == [True, False]
    # the merged-away id answers with the survivor's history
    merged = profiles.detail(ops(db, servers), project.name, int(anon[0]))
    assert merged.merged_into == survivor and len(merged.audiences[0].transitions) == 2


def test_a_delete_erases_the_engage_history_and_nobody_elses(
    db: psycopg.Connection, project: Project
) -> None:
    run(db, project, engage("eve", True, "2026-11-01T10:00:00Z"),
        engage("fay", True, "2026-11-01T10:00:00Z"),
        call("identify", userId="eve", traits={"ltv": 10},
             context=personas("ltv", "trait")))  # fmt: skip
    run(db, project, call("delete", userId="eve"), source="webhook")
    left = engage_rows(db, project)
    assert [(r[2], r[3]) for r in left] == [("audience", AUDIENCE)]
    assert left[0][1] == profile_of(db, project, "fay")


def test_computed_traits_are_traits_with_their_engage_source(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    computed = personas("ltv", "trait", "tra_1")
    run(db, project,
        call("identify", userId="gus", traits={"ltv": 10}, context=computed,
             timestamp="2026-11-01T10:00:00Z"),
        call("identify", userId="gus", traits={"ltv": 25}, context=computed,
             timestamp="2026-11-03T10:00:00Z"))  # fmt: skip
    found = history(db, servers, project, "gus")
    assert found.profile.traits["ltv"] == 25
    [source] = found.computed_traits
    assert (source.key, source.value, source.computation_id, source.space_id) == (
        "ltv", 25, "tra_1", SPACE)  # fmt: skip
    assert found.audiences == []


def test_reprocessing_derives_the_history_of_stored_calls_once(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    # (in the window run_reprocess covers)
    run(db, project, engage("hal", True, "2026-11-10T10:00:00Z"),
        engage("hal", False, "2026-11-11T10:00:00Z"))  # fmt: skip
    stored = engage_rows(db, project)
    # as if stored before this feature: the rows are not there yet
    db.execute("DELETE FROM engage_computations WHERE project_id = %s", (project.id,))
    run_reprocess(servers, db, project, RULES)
    assert engage_rows(db, project) == stored
    run_reprocess(servers, db, project, RULES)  # a second pass changes nothing
    assert engage_rows(db, project) == stored


def test_audience_members_by_latest_call_paged(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    run(db, project, *(engage(f"m{i}", True, "2026-11-01T10:00:00Z") for i in range(5)),
        engage("other", True, "2026-11-01T10:00:00Z", key="churn_risk"))  # fmt: skip
    run(db, project, engage("m1", False, "2026-11-02T10:00:00Z"),
        engage("m3", False, "2026-11-02T10:00:00Z"),
        engage("m3", True, "2026-11-06T10:00:00Z"))  # fmt: skip
    context = ops(db, servers)
    ids = {u: profile_of(db, project, u) for u in ("m0", "m1", "m2", "m3", "m4")}
    seen, cursor = [], None
    while True:
        page = audiences.members(context, project.name, AUDIENCE,
                                 audiences.MembersQuery(limit=2, cursor=cursor))  # fmt: skip
        seen += page.items
        if page.next is None:
            break
        cursor = page.next
    assert [m.profile_id for m in seen] == sorted(ids[u] for u in ("m0", "m2", "m3", "m4"))
    since = {m.profile_id: m.since.day for m in seen if m.since}
    assert since[ids["m3"]] == 6 and since[ids["m0"]] == 1  # the current stay's start
    gone = audiences.members(context, project.name, AUDIENCE,
                             audiences.MembersQuery(state="exited"))  # fmt: skip
    assert [m.profile_id for m in gone.items] == [ids["m1"]]
    listed = audiences.find(context, project.name, audiences.Query())
    assert [(a.key, a.members, a.profiles) for a in listed.items] == [
        ("churn_risk", 1, 1), (AUDIENCE, 4, 5)]  # fmt: skip


def test_the_admin_api_lists_audiences_and_members_in_scope(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    from starlette.testclient import TestClient

    from ingest.operations import tokens
    from ingest.receiver import create_app
    from ingest.store import projects

    run(db, project, engage("ivy", True, "2026-11-01T10:00:00Z"))
    other = projects.create(db, f"{project.name}-other")
    settings = Settings(DATABASE_URL=servers.database_url, REDIS_URL=servers.redis_url,
                        ADMIN_TOKEN="aud-token")  # fmt: skip
    auth = {"Authorization": "Bearer aud-token"}
    with TestClient(create_app(settings).app, raise_server_exceptions=False) as client:
        base = f"/admin/projects/{project.name}/audiences"
        listed = client.get(base, headers=auth)
        assert listed.status_code == 200
        assert [(a["key"], a["members"]) for a in listed.json()["items"]] == [(AUDIENCE, 1)]
        members = client.get(f"{base}/{AUDIENCE}/members", headers=auth).json()
        assert [m["profile_id"] for m in members["items"]] == [profile_of(db, project, "ivy")]
        assert members["key"] == AUDIENCE and members["next"] is None
        # another project's list is its own (empty); a token of that project alone does
        # not see this one's
        empty = client.get(f"/admin/projects/{other.name}/audiences", headers=auth).json()
        assert empty["items"] == []
        theirs = {"Authorization": "Bearer " + tokens.create(
            ops(db, servers), f"aud-{other.name}", "viewer", [other.name]).token}  # fmt: skip
        assert client.get(f"/admin/projects/{other.name}/audiences", headers=theirs).json()[
            "items"] == []  # fmt: skip
        hidden = client.get(f"{base}/{AUDIENCE}/members", headers=theirs)
        assert (hidden.status_code, hidden.json()["code"]) == (404, "unknown_project")
        # a bad state is a 400 with a code
        bad = client.get(f"{base}/{AUDIENCE}/members?state=maybe", headers=auth)
        assert bad.status_code == 400 and set(bad.json()) == {"code", "message"}
        unknown = client.get("/admin/projects/nope/audiences", headers=auth)
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_project")
        # the profile carries its history
        profile = client.get(
            f"/admin/projects/{project.name}/profiles/{profile_of(db, project, 'ivy')}",
            headers=auth,
        ).json()
        assert [t["entered"] for t in profile["audiences"][0]["transitions"]] == [True]


def test_the_cli_lists_audiences_and_an_audiences_members(
    servers: Servers, db: psycopg.Connection, project: Project
) -> None:
    import json
    import subprocess

    from conftest import koala

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(koala("audiences", project.name, *args), env=servers.env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    run(db, project, engage("jo", True, "2026-11-01T10:00:00Z"),
        engage("kim", True, "2026-11-01T10:00:00Z"),
        engage("kim", False, "2026-11-02T10:00:00Z"))  # fmt: skip
    listed = cli("--json")
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)["items"]
    assert [(a["key"], a["members"], a["profiles"]) for a in found] == [(AUDIENCE, 1, 2)]
    jo, kim = profile_of(db, project, "jo"), profile_of(db, project, "kim")
    members = json.loads(cli(AUDIENCE, "--state", "all", "--json").stdout)["items"]
    assert [(m["profile_id"], m["member"]) for m in members] == sorted([(jo, True), (kim, False)])
    rows = [line.split("│")[1].strip() for line in cli(AUDIENCE).stdout.splitlines()
            if line.startswith("│")]  # fmt: skip
    assert rows == [str(jo)]  # members now only
    assert cli(AUDIENCE, "--state", "maybe").returncode != 0


def test_retention_drops_old_history_but_keeps_each_profiles_state(
    db: psycopg.Connection, project: Project
) -> None:
    from datetime import UTC, datetime

    from ingest.store import audiences as store

    run(db, project, engage("liz", True, "2024-01-01T10:00:00Z"),
        engage("liz", False, "2024-02-01T10:00:00Z"),
        engage("liz", True, "2024-03-01T10:00:00Z"),  # old, but her state now
        engage("max", True, "2024-01-01T10:00:00Z"),
        engage("max", False, "2026-11-01T10:00:00Z"))  # fmt: skip
    before = datetime(2026, 1, 1, tzinfo=UTC)
    assert store.expire(db, project.id, before, 1) == 1  # in chunks
    assert store.expire(db, project.id, before, 10_000) == 2
    assert store.expire(db, project.id, before, 10_000) == 0
    left = {(r[1], r[4], r[8].year) for r in engage_rows(db, project)}
    liz, max_ = profile_of(db, project, "liz"), profile_of(db, project, "max")
    assert left == {(liz, True, 2024), (max_, False, 2026)}
