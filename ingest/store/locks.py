"""Striped advisory locks: what makes two batches touching one visitor, one profile or one
company domain run one after the other (workers/apply.py).

A lock is a stripe, not a name: PostgreSQL's two-key `pg_advisory_xact_lock(space,
stripe)` with `space` = the project and the kind of thing locked (identifiers, profiles,
company domains), and `stripe` = a stable hash of the thing (CRC-32 of its name, the id of
a profile) modulo `STRIPES`. Two things that share a stripe are locked together, which is
always safe (a lock is only ever stronger than needed) and never changes a result.

Why stripes:
- a batch takes one lock per distinct stripe of each kind, never more than `STRIPES`
  per kind, whatever its size: the bound of PostgreSQL's lock table
  (docs/scaling.md, "PostgreSQL's lock table");
- the stripe numbers are computed here, so the statement is an int array PostgreSQL
  sorts and locks, with no JSON to parse nor text to hash in the server;
- projects never contend: each project has its own spaces.

Deadlock freedom is the same argument as before: every batch takes its identifier stripes,
then its profile stripes, then its domain stripes, each kind in ascending order in one
statement; a batch never waits for a stripe of a kind or number lower than one it holds,
except in the documented exceptions (a profile found in a second round, deletes after a
batch), which PostgreSQL's deadlock detector breaks and the worker retries.

What the stripe count trades (measured, bench/README.md): a batch of n distinct things
shares at least one stripe with another batch of the same project with probability about
1 - exp(-n^2 / STRIPES), and then waits for its commit. A bound on locks per batch below
n is therefore only had by making batches of one project wait for each other.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import psycopg

IDENTIFIER, PROFILE, COMPANY = 0, 1, 2  # the kinds of lock; a space per kind and project
KINDS = 3
STRIPES = 1 << 16  # per kind and project


def space(project_id: int, kind: int) -> int:
    """The first key of a project's locks of one kind (an int4: project ids are smallint)."""
    return project_id * KINDS + kind


def name_stripe(name: str) -> int:
    """The stripe of a name (an identifier `kind:value`, a company domain): CRC-32, stable
    across processes and machines (Python's `hash` of a str is salted per process)."""
    return zlib.crc32(name.encode()) % STRIPES


def profile_stripe(profile_id: int) -> int:
    return profile_id % STRIPES


def lock(conn: psycopg.Connection, project_id: int, kind: int, stripes: Iterable[int]) -> int:
    """Take the stripes (transaction-scoped), deduplicated, in ascending order, in one
    statement; return how many distinct stripes that was."""
    ordered = sorted(set(stripes))
    if ordered:
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s::int4, s) FROM unnest(%s::int4[]) AS s ORDER BY s",
            (space(project_id, kind), ordered),
        ).fetchall()
    return len(ordered)


def identifiers(conn: psycopg.Connection, project_id: int, keys: Iterable[tuple[str, str]]) -> int:
    return lock(conn, project_id, IDENTIFIER, (name_stripe(f"{k}:{v}") for k, v in keys))


def profiles(conn: psycopg.Connection, project_id: int, profile_ids: Iterable[int]) -> int:
    return lock(conn, project_id, PROFILE, (profile_stripe(p) for p in profile_ids))


def domains(conn: psycopg.Connection, project_id: int, names: Iterable[str]) -> int:
    return lock(conn, project_id, COMPANY, (name_stripe(d) for d in names))
