"""Delete calls: a person's data erased on real PostgreSQL, and who may send one."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from conftest import queued

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS
from ingest.identifiers import Rules
from ingest.store import dead_letters, deletions, rejections
from ingest.store.dead_letters import DeadLetter
from ingest.store.projects import Project
from ingest.store.rejections import RejectionRow
from ingest.wire import parse_segment, parse_webhook
from workers.pipeline import process

RULES = Rules(frozenset(DEFAULT_BLOCKED_IDENTIFIERS))
RECEIVED = "2026-11-23T12:00:00.000Z"
_n = itertools.count()


def call(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "messageId": f"del-{next(_n)}", "receivedAt": RECEIVED, **fields}


def run(db: psycopg.Connection, project: Project, *calls: dict[str, Any], source: str = "webhook"):  # type: ignore[no-untyped-def]
    with db.transaction():
        return process(db, [queued(project.id, *calls, source=source, received_at=RECEIVED)], RULES)


def count(db: psycopg.Connection, sql: str, project: Project) -> int:
    row = db.execute(sql, (project.id,)).fetchone()
    assert row is not None
    return int(row[0])


def person_rows(db: psycopg.Connection, project: Project) -> dict[str, int]:
    return {
        "profiles": count(db, "SELECT count(*) FROM profiles WHERE project_id = %s", project),
        "events": count(db, "SELECT count(*) FROM events WHERE project_id = %s", project),
        "identities": count(db, "SELECT count(*) FROM identities WHERE project_id = %s", project),
        "links": count(db, "SELECT count(*) FROM profile_accounts WHERE project_id = %s", project),
        "merges": count(db, "SELECT count(*) FROM profile_merges WHERE project_id = %s", project),
        "accounts": count(db, "SELECT count(*) FROM accounts WHERE project_id = %s", project),
    }


def seed_ann_and_bob(db: psycopg.Connection, project: Project) -> None:
    """Ann: two anonymous devices merged into her identified profile, an alias, a
    company, a dead letter and a rejection naming her. Bob: a profile of his own, at the
    same company."""
    run(db, project,
        call("page", anonymousId="ann-laptop", properties={"path": "/"}),
        call("page", anonymousId="ann-phone", properties={"path": "/pricing"}),
        call("track", anonymousId="bob-laptop", event="Signed Up"),
        call("identify", userId="bob", anonymousId="bob-laptop", traits={"email": "bob@acme.com"}),
        call("group", userId="bob", groupId="acme", traits={"domain": "acme.com"}))  # fmt: skip
    run(db, project,
        call("identify", userId="ann", anonymousId="ann-laptop", traits={"email": "ann@acme.com"}),
        call("identify", userId="ann", anonymousId="ann-phone"),
        call("alias", previousId="ann-old", userId="ann"),
        call("group", userId="ann", groupId="acme", traits={"domain": "acme.com"}),
        call("track", userId="ann", event="Viewed Pricing"))  # fmt: skip
    with db.transaction():
        dead_letters.insert(db, [DeadLetter(
            project_id=project.id, message_id="dl-ann", payload=call("track", userId="ann"),
            stage="normalize", reason="invalid_timestamp", error="bad", traceback=None,
            source="segment", shared=None, received_at=RECEIVED, replay_of=None)])  # fmt: skip
        rejections.insert(db, [RejectionRow(
            project.id, RECEIVED, "segment", 0, "missing_event", "no event",
            '{"type": "track", "userId": "ann"}')])  # fmt: skip


def test_a_delete_erases_the_whole_person_and_nobody_else(
    db: psycopg.Connection, project: Project
) -> None:
    seed_ann_and_bob(db, project)
    before = person_rows(db, project)
    assert before["merges"] >= 1  # Ann's devices were merged: the tree must go as a whole
    result = run(db, project, call("delete", userId="ann"))
    assert result.total("stored") == 1 and result.total("deletions") == 1

    # Bob is intact: one profile, his events, ids and company link; the company stays
    assert person_rows(db, project) == {
        "profiles": 1, "events": 3, "identities": 3, "links": 1, "merges": 0, "accounts": 1
    }  # fmt: skip
    kinds = db.execute(
        "SELECT kind, value FROM identities WHERE project_id = %s ORDER BY kind", (project.id,)
    ).fetchall()
    assert kinds == [("anonymous_id", "bob-laptop"), ("email", "bob@acme.com"), ("user_id", "bob")]
    assert count(db, "SELECT count(*) FROM dead_letters WHERE project_id = %s", project) == 0
    assert count(db, "SELECT count(*) FROM rejections WHERE project_id = %s", project) == 0
    [record] = deletions.list_recent(db, project.id)
    assert record["identifiers"] == ["user_id:ann"]
    assert record["events"] == before["events"] - 3
    assert record["profiles"] == before["profiles"] - 1  # her merged-away profiles too
    assert (record["dead_letters"], record["rejections"]) == (1, 1)


def test_a_resent_delete_is_a_duplicate_and_old_calls_resent_do_not_come_back(
    db: psycopg.Connection, project: Project
) -> None:
    first = call("track", userId="carol", event="Viewed Pricing")
    run(db, project, first)
    delete = call("delete", userId="carol")
    run(db, project, delete)
    again = run(db, project, delete, first)  # Segment's retry, and an SDK's late retry
    assert again.total("duplicates") == 2 and again.total("stored") == 0
    assert person_rows(db, project)["events"] == 0
    later = run(db, project, call("track", userId="carol", event="Came Back"))
    assert later.total("stored") == 1  # a new call after the deletion is a new start
    assert person_rows(db, project)["profiles"] == 1
    assert len(deletions.list_recent(db, project.id)) == 1


def test_a_delete_in_the_same_batch_erases_what_came_before_it(
    db: psycopg.Connection, project: Project
) -> None:
    run(db, project, call("identify", userId="dan", traits={"email": "dan@acme.com"}),
        call("delete", userId="dan"))  # fmt: skip
    assert person_rows(db, project)["profiles"] == 0
    assert person_rows(db, project)["events"] == 0


def test_a_delete_of_an_unknown_user_is_recorded_with_nothing_erased(
    db: psycopg.Connection, project: Project
) -> None:
    run(db, project, call("delete", userId="nobody"))
    [record] = deletions.list_recent(db, project.id)
    assert (record["profiles"], record["events"], record["identities"]) == (0, 0, 0)


# --- who may send one -------------------------------------------------------------------

LIMITS = {"max_call_bytes": 32 * 1024, "max_batch_calls": 100, "received_at": RECEIVED}


def test_a_delete_needs_a_signed_webhook() -> None:
    delete = {"type": "delete", "userId": "ann", "messageId": "d-1"}
    unsigned = parse_webhook(dict(delete), **LIMITS, signed=False)  # type: ignore[arg-type]
    assert [r.code for r in unsigned.rejected] == ["delete_not_accepted"]
    signed = parse_webhook(dict(delete), **LIMITS, signed=True)  # type: ignore[arg-type]
    assert signed.calls and not signed.rejected
    tracking = parse_segment(
        {"batch": [dict(delete)]},
        None,
        raw=b"{}",
        **LIMITS,  # type: ignore[arg-type]
    )
    assert [r.code for r in tracking.rejected] == ["delete_not_accepted"]


def test_a_delete_in_a_signed_webhook_batch_counts_only_as_its_first_item() -> None:
    """Segment signs a webhook batch by its first item: a delete behind it could have
    been appended by anyone holding one signed request."""
    delete = {"type": "delete", "userId": "ann", "messageId": "d-3"}
    track = {"type": "track", "event": "E", "userId": "u", "messageId": "t-1"}
    first = parse_webhook([dict(delete), dict(track)], **LIMITS, signed=True)  # type: ignore[arg-type]
    assert len(first.calls) == 2 and not first.rejected
    behind = parse_webhook([dict(track), dict(delete)], **LIMITS, signed=True)  # type: ignore[arg-type]
    assert [(r.index, r.code) for r in behind.rejected] == [(1, "delete_not_accepted")]


@pytest.mark.parametrize("user", [None, "", 0.5])
def test_a_signed_delete_without_a_user_id_is_refused(user: object) -> None:
    delete = {"type": "delete", "messageId": "d-2"} | ({"userId": user} if user is not None else {})
    parsed = parse_webhook(delete, **LIMITS, signed=True)  # type: ignore[arg-type]
    assert [r.code for r in parsed.rejected] == ["missing_user_id"]
