"""Striped advisory locks (ingest/store/locks.py) on real PostgreSQL: who waits for whom."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import psycopg
import pytest
from conftest import Servers

from ingest.store import locks, projects
from ingest.store.projects import Project
from workers import apply


@pytest.fixture
def pair(servers: Servers) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    with (
        psycopg.connect(servers.database_url, autocommit=True) as a,
        psycopg.connect(servers.database_url, autocommit=True) as b,
    ):
        yield a, b


def waits(
    pair: tuple[psycopg.Connection, psycopg.Connection],
    first: Callable[[psycopg.Connection], object],
    second: Callable[[psycopg.Connection], object],
) -> bool:
    """Whether `second` waits for the locks `first` holds in its open transaction."""
    a, b = pair
    with a.transaction():
        first(a)
        try:
            with b.transaction():
                b.execute("SET LOCAL lock_timeout = '200ms'")
                second(b)
        except psycopg.errors.LockNotAvailable:
            return True
    return False


def keys(tag: str, n: int) -> list[tuple[str, str]]:
    return [("anonymous_id", f"anon-{tag}-{i}") for i in range(n)] + [
        ("user_id", f"user-{tag}-{i}") for i in range(n)
    ]


def test_a_batch_waits_for_another_holding_one_of_its_identifiers(
    pair: tuple[psycopg.Connection, psycopg.Connection], project: Project
) -> None:
    mine = keys("a", 500)
    assert waits(
        pair,
        lambda c: apply.lock_identities(c, project.id, mine),
        lambda c: apply.lock_identities(c, project.id, [*keys("b", 500), mine[250]]),
    )


def test_batches_of_disjoint_visitors_do_not_wait_for_each_other(
    pair: tuple[psycopg.Connection, psycopg.Connection], project: Project
) -> None:
    """~1,000 identifiers a batch, the size of a 1,000-call batch's: with 65,536 stripes
    they would share one nearly always (1 - exp(-1000^2 / 65536)); one stripe per name
    keeps them apart."""
    for n in range(5):
        assert not waits(
            pair,
            lambda c, n=n: apply.lock_identities(c, project.id, keys(f"a{n}", 500)),
            lambda c, n=n: apply.lock_identities(c, project.id, keys(f"b{n}", 500)),
        )


def test_a_batch_waits_for_another_holding_a_profile_it_finds(
    pair: tuple[psycopg.Connection, psycopg.Connection], project: Project, db: psycopg.Connection
) -> None:
    """The second batch's identifiers are free, but the profile holding them is locked."""
    profile = db.execute(
        "INSERT INTO profiles (project_id) VALUES (%s) RETURNING id", (project.id,)
    ).fetchone()[0]  # type: ignore[index]
    db.execute(
        "INSERT INTO identities (project_id, kind, value, profile_id)"
        " VALUES (%s, 'user_id', 'ann', %s)",
        (project.id, profile),
    )
    assert waits(
        pair,
        lambda c: locks.profiles(c, project.id, [profile]),
        lambda c: apply.lock_identities(c, project.id, [("user_id", "ann")]),
    )


def test_projects_never_wait_for_each_other_on_the_same_names(
    pair: tuple[psycopg.Connection, psycopg.Connection],
    project: Project,
    db: psycopg.Connection,
) -> None:
    other = projects.create(db, f"p-{secrets.token_hex(4)}")
    same = keys("same", 50)
    assert not waits(
        pair,
        lambda c: (locks.identifiers(c, project.id, same), locks.domains(c, project.id, ["a.io"])),
        lambda c: (locks.identifiers(c, other.id, same), locks.domains(c, other.id, ["a.io"])),
    )
    # and the kinds are apart: a company domain never waits for an identifier's lock
    assert not waits(
        pair,
        lambda c: locks.identifiers(c, project.id, [("email", "a.io")]),
        lambda c: locks.domains(c, project.id, ["email:a.io"]),
    )
