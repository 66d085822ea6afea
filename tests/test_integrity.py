"""What the hot tables' foreign keys promised, kept without a check per inserted row
(migration 0018): a project is never deleted, an erasure leaves no row naming the
profiles it deleted, and `integrity.orphans` finds a row naming a missing parent."""

from __future__ import annotations

import psycopg
import pytest
from test_store import call, request, run

from ingest.store import integrity
from ingest.store.projects import Project


def test_a_project_cannot_be_deleted_or_truncated(db: psycopg.Connection, project: Project) -> None:
    with pytest.raises(psycopg.errors.RestrictViolation, match="revoked, never deleted"):
        db.execute("DELETE FROM projects WHERE id = %s", (project.id,))
    with pytest.raises(psycopg.errors.RestrictViolation):
        db.execute("TRUNCATE projects CASCADE")
    assert db.execute("SELECT count(*) FROM projects WHERE id = %s", (project.id,)).fetchone() == (
        1,
    )


def test_deleting_a_profile_its_events_still_name_fails_like_a_foreign_key(
    db: psycopg.Connection, project: Project
) -> None:
    run(db, request(project, call("identify", userId="ann", traits={"email": "ann@acme.com"})))
    (profile,) = db.execute(
        "SELECT id FROM profiles WHERE project_id = %s", (project.id,)
    ).fetchone()
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="rows of events"):
        db.execute("DELETE FROM profiles WHERE id = %s", (profile,))
    with db.transaction(force_rollback=True):  # the events gone, the identities still there
        db.execute("DELETE FROM events WHERE profile_id = %s", (profile,))
        with (
            pytest.raises(psycopg.errors.ForeignKeyViolation, match="rows of identities"),
            db.transaction(),
        ):
            db.execute("DELETE FROM profiles WHERE id = %s", (profile,))
    assert integrity.orphans(db) == {}


def test_an_erasure_passes_the_check_and_leaves_no_orphans(
    db: psycopg.Connection, project: Project
) -> None:
    run(
        db,
        request(
            project,
            call("identify", userId="bo", anonymousId="a-bo", traits={"email": "bo@acme.com"}),
            call("group", userId="bo", groupId="g1", traits={"domain": "acme.com"}),
            call("page", anonymousId="a-bo", properties={"path": "/pricing"}),
        ),
    )
    result = run(db, request(project, call("delete", userId="bo")))
    assert result.total("deletions") == 1
    assert db.execute(
        "SELECT count(*) FROM profiles WHERE project_id = %s", (project.id,)
    ).fetchone() == (0,)
    assert integrity.orphans(db) == {}


def test_orphans_names_a_row_whose_profile_or_project_is_missing(
    db: psycopg.Connection, project: Project
) -> None:
    with db.transaction(force_rollback=True):
        db.execute(
            "INSERT INTO identities (project_id, kind, value, profile_id)"
            " VALUES (%s, 'user_id', 'ghost', -1), (-7, 'user_id', 'ghost', -1)",
            (project.id,),
        )
        assert integrity.orphans(db) == {"identities.profile_id": 2, "identities.project_id": 1}
    assert integrity.orphans(db) == {}
