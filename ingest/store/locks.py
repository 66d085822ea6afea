"""Striped advisory locks: what makes two batches touching one visitor, one profile or one
company domain run one after the other (workers/apply.py).

A lock is a stripe, not a name: PostgreSQL's two-key `pg_advisory_xact_lock(space,
stripe)` with `space` = the project and the kind of thing locked (identifiers, profiles,
company domains), and `stripe` = a stable hash of the thing (`hashtextextended` of its name, the
id of a profile) modulo `STRIPES`. Two things that share a stripe are locked together, which is
always safe (a lock is only ever stronger than needed) and never changes a result.

What this layout gives:
- one statement per kind takes all of a batch's locks. The names or numbers go as one JSON
  text (orjson): psycopg dumps a Python list as an array in Python, element by element
  (measured: 1,450 names 8.9 ms, 700 ints 2.0 ms of worker CPU; their JSON 0.03 ms);
- projects never contend, and kinds never do: each project has a space per kind;
- a batch takes at most `STRIPES` locks of a kind. That bound is not used: see below.

Deadlock freedom is the same argument as before: every batch takes its identifier stripes,
then its profile stripes, then its domain stripes, each kind in ascending order in one
statement; a batch never waits for a stripe of a kind or number lower than one it holds,
except in the documented exceptions (a profile found in a second round, deletes after a
batch), which PostgreSQL's deadlock detector breaks and the worker retries.

What the stripe count trades: a batch of n distinct things shares at least one stripe with
another batch of the same project with probability ~1 - exp(-n^2 / STRIPES), and then waits
for its commit. Two 1,000-call batches of disjoint visitors (~1,450 identifiers each) did
10 times in 10 at 2^16 stripes, 9 at 2^20, 1 at 2^24, 0 at 2^31 (bench/README.md): a bound
below n locks a batch is only had by running one project's batches one at a time. So
`STRIPES` is 2^31, in effect a lock per name, and PostgreSQL's lock table is sized as
docs/scaling.md says.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from ingest.store._json import rows as json_rows

IDENTIFIER, PROFILE, COMPANY = 0, 1, 2  # the kinds of lock; a space per kind and project
KINDS = 3
STRIPES = 1 << 31  # per kind and project (the int4 range): see above for why not fewer


def space(project_id: int, kind: int) -> int:
    """The first key of a project's locks of one kind (an int4: project ids are smallint)."""
    return project_id * KINDS + kind


def profile_stripe(profile_id: int) -> int:
    return profile_id % STRIPES


def lock(conn: psycopg.Connection, project_id: int, kind: int, stripes: Iterable[int]) -> None:
    """Take the stripes (transaction-scoped), deduplicated, ascending, in one statement."""
    ordered = sorted(set(stripes))
    if ordered:
        conn.execute(
            """
            SELECT pg_advisory_xact_lock(%s::int4, s)
            FROM (SELECT value::int4 AS s FROM json_array_elements_text(%s::json)) AS stripes
            ORDER BY s
            """,
            (space(project_id, kind), json_rows(ordered)),
        ).fetchall()


def lock_names(conn: psycopg.Connection, project_id: int, kind: int, names: list[str]) -> None:
    """Take the stripes of names, in one statement. The server hashes them
    (`hashtextextended`, in C): a good hash in Python costs the worker microseconds a name
    (BLAKE2b: ~1.5 us a call), a cheap one is linear (CRC-32: names that differ alike,
    `anon-A1`/`anon-B1`, `anon-A2`/`anon-B2`, collide together far more than by chance)."""
    if names:
        conn.execute(
            """
            SELECT pg_advisory_xact_lock(%(space)s::int4, s)
            FROM (SELECT DISTINCT ((hashtextextended(n, 0) %% %(n)s + %(n)s) %% %(n)s)::int4 AS s
                  FROM json_array_elements_text(%(names)s::json) AS n) AS stripes
            ORDER BY s
            """,
            {"space": space(project_id, kind), "n": STRIPES, "names": json_rows(names)},
        ).fetchall()


def identifiers(conn: psycopg.Connection, project_id: int, keys: Iterable[tuple[str, str]]) -> None:
    lock_names(conn, project_id, IDENTIFIER, [f"{k}:{v}" for k, v in keys])


def profiles(conn: psycopg.Connection, project_id: int, profile_ids: Iterable[int]) -> None:
    lock(conn, project_id, PROFILE, (profile_stripe(p) for p in profile_ids))


def domains(conn: psycopg.Connection, project_id: int, names: Iterable[str]) -> None:
    lock_names(conn, project_id, COMPANY, list(names))
