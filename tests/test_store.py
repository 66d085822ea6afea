"""The whole batch path (dedupe, resolve, store) on real PostgreSQL, without Celery."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
from conftest import queued

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.store.projects import Project
from workers.pipeline import process

BLOCKED = frozenset(DEFAULT_BLOCKED_IDENTIFIERS)
RULES = Rules(BLOCKED)
RECEIVED = "2026-11-23T12:00:00.000Z"
_n = itertools.count()


def call(kind: str, **fields: Any) -> dict[str, Any]:
    out = {"type": kind, "messageId": f"msg-{next(_n)}", "receivedAt": RECEIVED}
    out.update(fields)
    return out


def request(
    project: Project,
    *calls: dict[str, Any],
    rejected: list | None = None,
    source: str = "segment",
    shared: dict | None = None,
) -> QueuedRequest:
    return queued(
        project.id, *calls, source=source, received_at=RECEIVED, shared=shared,
        rejected=rejected or [],
    )  # fmt: skip


def run(db: psycopg.Connection, *requests: QueuedRequest) -> Any:
    with db.transaction():
        return process(db, list(requests), RULES)


def profiles_of(db: psycopg.Connection, project: Project) -> list[tuple[Any, ...]]:
    return db.execute(
        """
        SELECT p.id, p.event_count, array_agg(i.kind || '=' || i.value ORDER BY i.kind, i.value)
        FROM profiles p LEFT JOIN identities i ON i.profile_id = p.id
        WHERE p.project_id = %s AND p.merged_into IS NULL GROUP BY p.id ORDER BY p.id
        """,
        (project.id,),
    ).fetchall()


def test_batch_redelivered_writes_nothing_twice(db: psycopg.Connection, project: Project) -> None:
    req = request(
        project,
        call("track", event="A", anonymousId="a1"),
        call("identify", userId="u1", traits={"email": "ann@acme.com"}),
    )
    first = run(db, req)
    again = run(db, req)
    assert (first.total("stored"), again.total("stored"), again.total("duplicates")) == (2, 0, 2)
    n = db.execute("SELECT count(*) FROM events WHERE project_id = %s", (project.id,)).fetchone()
    assert n == (2,)
    counters = db.execute(
        "SELECT stored, duplicates, conflicting_duplicates FROM "
        "project_counters WHERE project_id = %s",
        (project.id,),
    ).fetchone()
    assert counters == (2, 2, 0)


def test_same_message_id_with_different_content_is_a_conflicting_duplicate(
    db: psycopg.Connection, project: Project
) -> None:
    a = call("track", event="A", userId="u1", messageId="same")
    b = dict(a, event="B")
    run(db, request(project, a))
    result = run(db, request(project, b, a))
    assert result.total("duplicates") == 2
    assert result.total("conflicting_duplicates") == 1
    [(event,)] = db.execute(
        "SELECT event FROM events WHERE project_id = %s AND message_id = 'same'", (project.id,)
    ).fetchall()
    assert event == "A"


def test_anonymous_visitor_then_identified_in_a_later_batch_is_one_profile(
    db: psycopg.Connection, project: Project
) -> None:
    run(db, request(project, call("page", anonymousId="a1", properties={"profile_id": "ko-1"})))
    run(db, request(project, call("track", event="Viewed", anonymousId="a1")))
    run(
        db,
        request(
            project,
            call(
                "identify",
                userId="u1",
                anonymousId="a1",
                traits={"email": "Ann@Acme.com", "name": "Ann"},
            ),
        ),
    )
    [(pid, count, ids)] = profiles_of(db, project)
    assert count == 3
    assert ids == ["anonymous_id=a1", "email=ann@acme.com", "profile_id=ko-1", "user_id=u1"]
    events = db.execute(
        "SELECT DISTINCT profile_id FROM events WHERE project_id = %s", (project.id,)
    ).fetchall()
    assert events == [(pid,)]


def test_merge_moves_identities_events_and_accounts_and_is_logged(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            call(
                "group",
                anonymousId="a1",
                groupId="g1",
                traits={"name": "Acme", "domain": "acme.com"},
            ),
        ),
    )
    run(db, request(project, call("identify", userId="u1", traits={"email": "ann@acme.com"})))
    assert len(profiles_of(db, project)) == 2
    run(db, request(project, call("track", event="Linked", userId="u1", anonymousId="a1")))
    [(pid, count, ids)] = profiles_of(db, project)
    assert count == 3 and "anonymous_id=a1" in ids and "user_id=u1" in ids
    links = db.execute(
        "SELECT a.group_id, a.domain FROM profile_accounts pa JOIN accounts a "
        "ON a.id = pa.account_id WHERE pa.profile_id = %s",
        (pid,),
    ).fetchall()
    assert links == [("g1", "acme.com")]
    [(from_p, into_p, refused)] = db.execute(
        "SELECT from_profile, into_profile, refused FROM profile_merges WHERE project_id = %s",
        (project.id,),
    ).fetchall()
    assert into_p == pid and not refused
    merged = db.execute(
        "SELECT merged_into, event_count FROM profiles WHERE id = %s", (from_p,)
    ).fetchone()
    assert merged == (pid, 0)


def test_shared_browser_keeps_two_people_apart(db: psycopg.Connection, project: Project) -> None:
    run(
        db,
        request(project, call("identify", anonymousId="laptop", traits={"email": "ann@acme.com"})),
    )
    run(db, request(project, call("identify", userId="bob", traits={"email": "bob@acme.com"})))
    run(
        db,
        request(
            project,
            call(
                "track",
                event="X",
                anonymousId="laptop",
                userId="bob",
                properties={"email": "bob@acme.com"},
            ),
        ),
    )
    profiles = profiles_of(db, project)
    assert len(profiles) == 2
    refused = db.execute(
        "SELECT count(*) FROM profile_merges WHERE project_id = %s AND refused", (project.id,)
    ).fetchone()
    assert refused == (1,)
    bob = next(p for p in profiles if "email=bob@acme.com" in p[2])
    assert bob[1] == 2  # the event went to Bob


def test_identify_traits_newest_wins_across_batches(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            call("identify", userId="u1", timestamp="2026-11-20T10:00:00Z", traits={"plan": "pro"}),
        ),
    )
    run(
        db,
        request(
            project,
            call(
                "identify",
                userId="u1",
                timestamp="2026-11-19T10:00:00Z",
                traits={"plan": "free", "seats": 3},
            ),
        ),
    )
    traits = db.execute(
        "SELECT traits FROM profiles WHERE project_id = %s AND merged_into IS NULL", (project.id,)
    ).fetchone()
    assert traits == ({"plan": "pro", "seats": 3},)


def test_rejections_and_unnormalizable_calls_are_kept_and_counted(
    db: psycopg.Connection, project: Project
) -> None:
    rejected = [{"index": 1, "code": "missing_event", "message": "m", "payload": "{}"}]
    bad = {"type": "track", "event": "E", "userId": "u"}  # no stamps: cannot be normalized
    result = run(
        db, request(project, call("track", event="ok", userId="u"), bad, rejected=rejected)
    )
    assert (result.total("stored"), result.total("rejected"), result.total("dead_lettered")) == (
        1,
        1,
        1,
    )
    assert db.execute(
        "SELECT code FROM rejections WHERE project_id = %s", (project.id,)
    ).fetchall() == [("missing_event",)]
    assert db.execute(
        "SELECT reason, payload FROM dead_letters WHERE project_id = %s", (project.id,)
    ).fetchall() == [("missing_message_id", bad)]


def test_koala_requests_resolve_by_profile_id_then_email(
    db: psycopg.Connection, project: Project
) -> None:
    item = {"type": "track", "event": "Viewed Pricing", "receivedAt": RECEIVED}
    run(
        db,
        request(
            project, dict(item, message_id="k1"), source="koala", shared={"profile_id": "ko-9"}
        ),
    )
    run(
        db,
        request(
            project,
            dict(
                item, message_id="k2", type="identify", traits={"$account": {"domain": "acme.com"}}
            ),
            source="koala",
            shared={"profile_id": "ko-9", "email": "dee@acme.com"},
        ),
    )
    [(pid, count, ids)] = profiles_of(db, project)
    assert count == 2 and ids == ["email=dee@acme.com", "profile_id=ko-9"]
    assert db.execute(
        "SELECT a.domain FROM profile_accounts pa JOIN accounts a ON "
        "a.id = pa.account_id WHERE pa.profile_id = %s",
        (pid,),
    ).fetchall() == [("acme.com",)]


class CountingCursor(psycopg.Cursor[Any]):
    statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.statements += 1
        return super().execute(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.statements += 1
        return super().copy(*args, **kwargs)


def test_statements_per_batch_do_not_grow_with_the_batch(
    db: psycopg.Connection, project: Project
) -> None:
    db.cursor_factory = CountingCursor
    counts = {}
    for n in (20, 1000):
        calls = [
            call(
                "identify",
                anonymousId=f"v{n}-{i % 50}",
                groupId="g",
                # a new work domain in each run: both runs create their company
                traits={"email": f"p{n}-{i % 50}@x{n}.io"},
            )
            for i in range(n)
        ]
        calls += [call("group", anonymousId=f"v{n}-{i}", groupId=f"g{i}") for i in range(10)]
        CountingCursor.statements = 0
        result = run(db, request(project, *calls))
        assert result.total("stored") == n + 10
        counts[n] = CountingCursor.statements
    assert 5 < counts[20] == counts[1000] < 30, counts


def test_expiry_forgets_old_dedup_and_batch_keys_only(
    db: psycopg.Connection, project: Project
) -> None:
    from ingest.store import batches, message_ids

    run(db, request(project, call("track", event="Old", userId="u", messageId="old-1")))
    run(db, request(project, call("track", event="New", userId="u", messageId="new-1")))
    db.execute(
        "UPDATE message_ids SET first_seen = now() - interval '8 days'"
        " WHERE project_id = %s AND message_id = 'old-1'",
        (project.id,),
    )
    with db.transaction():
        assert batches.claim(db, "task-old") and not batches.claim(db, "task-old")
    db.execute(
        "UPDATE processed_batches SET processed_at = now() - interval '2 days'"
        " WHERE task_id = 'task-old'"
    )
    with db.transaction():
        assert message_ids.expire(db, 7, 10_000) >= 1
        assert batches.expire(db, 86_400, 10_000) >= 1
    # an expired key is new again; a kept one is still a duplicate
    again = run(
        db,
        request(
            project,
            call("track", event="Old", userId="u", messageId="old-1"),
            call("track", event="New", userId="u", messageId="new-1"),
        ),
    )
    assert (again.total("stored"), again.total("duplicates")) == (1, 1)
    with db.transaction():
        assert batches.claim(db, "task-old")


def test_a_letter_whose_replay_arrives_twice_is_counted_once(
    db: psycopg.Connection, project: Project
) -> None:
    from ingest.replay import _request
    from ingest.store import dead_letters

    bad = call(
        "track",
        event="E",
        userId="u",
        timestamp="0001-01-01T00:00:00Z",
        sentAt="9999-12-31T00:00:00Z",
    )
    run(db, request(project, bad))
    fixed = {k: v for k, v in bad.items() if k not in ("timestamp", "sentAt")}
    with db.transaction():
        [letter] = dead_letters.claim_for_replay(db, dead_letters.Filter(project_id=project.id), 10)
        dead_letters.edit_payload(db, letter["id"], fixed)  # the operator's correction
    letter["payload"] = fixed
    replay = _request(letter)
    run(db, replay)
    run(db, replay)  # the same replay delivered again (e.g. pushed twice)
    counters = db.execute(
        "SELECT stored, duplicates, dead_lettered FROM project_counters WHERE project_id = %s",
        (project.id,),
    ).fetchone()
    assert counters == (1, 0, 0)
