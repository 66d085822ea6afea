"""The `accounts` and `profile_accounts` tables: companies and who belongs to them."""

from __future__ import annotations

from typing import Any

import psycopg

from ingest.store._json import jsonb


def upsert(
    conn: psycopg.Connection, project_id: int, accounts: list[dict[str, Any]]
) -> dict[str, int]:
    """Create or update accounts by group_id (later calls refine domain, name, traits);
    return group_id -> account id."""
    if not accounts:
        return {}
    accounts = sorted(accounts, key=lambda a: a["group_id"])
    cur = conn.execute(
        """
        INSERT INTO accounts AS a (project_id, group_id, domain, name, traits)
        SELECT %s, g, d, n, t
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[]) AS x(g, d, n, t)
        ON CONFLICT (project_id, group_id) DO UPDATE SET
            domain = coalesce(EXCLUDED.domain, a.domain),
            name = coalesce(EXCLUDED.name, a.name),
            traits = a.traits || EXCLUDED.traits,
            updated_at = now()
        RETURNING group_id, id
        """,
        (
            project_id,
            [a["group_id"] for a in accounts],
            [a.get("domain") for a in accounts],
            [a.get("name") for a in accounts],
            [jsonb(a.get("traits") or {}) for a in accounts],
        ),
    )
    return {str(g): int(i) for g, i in cur.fetchall()}


def link(conn: psycopg.Connection, project_id: int, links: list[tuple[int, int]]) -> None:
    """(profile_id, account_id) pairs."""
    if not links:
        return
    links = sorted(set(links))
    conn.execute(
        """
        INSERT INTO profile_accounts (profile_id, account_id, project_id)
        SELECT p, a, %s FROM unnest(%s::bigint[], %s::bigint[]) AS t(p, a)
        ON CONFLICT DO NOTHING
        """,
        (project_id, [p for p, _ in links], [a for _, a in links]),
    )


def move_links(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """A merged-away profile's account links go to the profile it merged into."""
    if not pairs:
        return
    params = ([f for f, _ in pairs], [t for _, t in pairs])
    conn.execute(
        """
        INSERT INTO profile_accounts (profile_id, account_id, project_id)
        SELECT m.into_id, pa.account_id, pa.project_id
        FROM profile_accounts pa JOIN unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
          ON pa.profile_id = m.from_id
        ON CONFLICT DO NOTHING
        """,
        params,
    )
    conn.execute("DELETE FROM profile_accounts WHERE profile_id = ANY(%s)", (params[0],))


def of_profiles(
    conn: psycopg.Connection, profile_ids: list[int]
) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if not profile_ids:
        return out
    cur = conn.execute(
        """
        SELECT pa.profile_id, a.id, a.group_id, a.domain, a.name
        FROM profile_accounts pa JOIN accounts a ON a.id = pa.account_id
        WHERE pa.profile_id = ANY(%s) ORDER BY a.id
        """,
        (profile_ids,),
    )
    for p, i, g, d, n in cur.fetchall():
        out.setdefault(int(p), []).append({"id": i, "group_id": g, "domain": d, "name": n})
    return out
