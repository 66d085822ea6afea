"""The `accounts` and `profile_accounts` tables: companies and who belongs to them; and
`account_domains` / `account_merges` (migration 0010): the one company of a domain, and
the accounts merged because they turned out to be one company."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from ingest.store import locks
from ingest.store._json import jsonb


def upsert(
    conn: psycopg.Connection, project_id: int, accounts: list[dict[str, Any]]
) -> dict[str, int]:
    """Create or update accounts by group_id (later calls refine domain, name, traits);
    return group_id -> account id (the company it was merged into, if it was)."""
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
        RETURNING group_id, coalesce(merged_into, id)
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


@dataclass(frozen=True, slots=True)
class Holder:
    """The account that is a domain's company, and whether it has no groupId (an account
    created for a work email's domain)."""

    account_id: int
    domain_only: bool


def lock_domains(conn: psycopg.Connection, project_id: int, domains: list[str]) -> None:
    """Advisory locks on the batch's company domains (their stripes), taken before its
    account rows are written: two batches deciding the company of one domain run one after
    the other."""
    locks.domains(conn, project_id, domains)


def holders(conn: psycopg.Connection, project_id: int, domains: list[str]) -> dict[str, Holder]:
    if not domains:
        return {}
    # one primary-key lookup per domain (LATERAL ... LIMIT 1, the key allows one row): a
    # plan that does not change with the table's size (identities.owners says why)
    cur = conn.execute(
        """
        SELECT w.domain, d.account_id, d.only_domain
        FROM unnest(%s::text[]) AS w (domain)
        CROSS JOIN LATERAL (
            SELECT k.account_id, a.group_id IS NULL AS only_domain
            FROM account_domains k JOIN accounts a ON a.id = k.account_id
            WHERE k.project_id = %s AND k.domain = w.domain
            LIMIT 1
        ) AS d
        """,
        (domains, project_id),
    )
    return {str(d): Holder(int(i), bool(only)) for d, i, only in cur.fetchall()}


def create_for_domains(
    conn: psycopg.Connection, project_id: int, domains: list[str]
) -> dict[str, int]:
    """New accounts without a groupId, one per domain: domain -> account id."""
    if not domains:
        return {}
    cur = conn.execute(
        """
        INSERT INTO accounts (project_id, domain)
        SELECT %s, d FROM unnest(%s::text[]) AS d
        RETURNING domain, id
        """,
        (project_id, sorted(domains)),
    )
    return {str(d): int(i) for d, i in cur.fetchall()}


def claim_domains(conn: psycopg.Connection, project_id: int, owners: dict[str, int]) -> None:
    """Record domain -> account for domains nobody held (under the domains' locks)."""
    if not owners:
        return
    domains = sorted(owners)
    conn.execute(
        """
        INSERT INTO account_domains (project_id, domain, account_id)
        SELECT %s, d, a FROM unnest(%s::text[], %s::bigint[]) AS t(d, a)
        ON CONFLICT DO NOTHING
        """,
        (project_id, domains, [owners[d] for d in domains]),
    )


@dataclass(frozen=True, slots=True)
class AccountMerge:
    from_account: int
    into_account: int
    domain: str
    message_id: str | None
    reason: str = "same_domain"


def merge(conn: psycopg.Connection, project_id: int, merges: list[AccountMerge]) -> None:
    """Fold accounts into others: record each merge, point the merged-away account (and
    any merged into it before) at the survivor, move its domains and visitors, and fill
    the survivor's missing name, domain and traits from it.

    The survivor's own values win: it is the domain's first company, or the group account
    a work-email company (no name, no traits) joins. Without the fill, two group accounts
    of one domain merging (`g-acme` then `g-acme-eu`, whose group call named it "Acme EU"
    with a plan trait) left the company without what only the newcomer carried. Among
    several accounts merged into one survivor at once, the oldest (lowest id) wins a
    clash."""
    if not merges:
        return
    froms = [m.from_account for m in merges]
    intos = [m.into_account for m in merges]
    conn.execute(
        """
        WITH m AS (
            SELECT * FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        ), gaps AS (
            SELECT m.into_id,
                (array_agg(f.name ORDER BY f.id) FILTER (WHERE f.name IS NOT NULL))[1] AS name,
                (array_agg(f.domain ORDER BY f.id)
                    FILTER (WHERE f.domain IS NOT NULL))[1] AS domain
            FROM m JOIN accounts f ON f.id = m.from_id
            GROUP BY m.into_id
        ), traits AS (
            -- jsonb_object_agg keeps a key's last value: descending ids, so the oldest's
            SELECT m.into_id, jsonb_object_agg(t.key, t.value ORDER BY f.id DESC) AS traits
            FROM m JOIN accounts f ON f.id = m.from_id
                CROSS JOIN LATERAL jsonb_each(f.traits) AS t
            GROUP BY m.into_id
        )
        UPDATE accounts a SET
            name = coalesce(a.name, g.name),
            domain = coalesce(a.domain, g.domain),
            traits = coalesce(t.traits, '{}'::jsonb) || a.traits,
            updated_at = now()
        FROM gaps g LEFT JOIN traits t ON t.into_id = g.into_id
        WHERE a.id = g.into_id
        """,
        (froms, intos),
    )
    conn.execute(
        """
        INSERT INTO account_merges
            (project_id, from_account, into_account, domain, reason, message_id)
        SELECT %s, f, i, d, r, m
        FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[])
            AS t(f, i, d, r, m)
        """,
        (
            project_id,
            froms,
            intos,
            [m.domain for m in merges],
            [m.reason for m in merges],
            [m.message_id for m in merges],
        ),
    )
    conn.execute(
        """
        UPDATE accounts a SET merged_into = m.into_id, updated_at = now()
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE a.id = m.from_id OR a.merged_into = m.from_id
        """,
        (froms, intos),
    )
    conn.execute(
        """
        UPDATE account_domains d SET account_id = m.into_id
        FROM unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
        WHERE d.account_id = m.from_id
        """,
        (froms, intos),
    )
    conn.execute(
        """
        INSERT INTO profile_accounts (profile_id, account_id, project_id)
        SELECT pa.profile_id, m.into_id, pa.project_id
        FROM profile_accounts pa JOIN unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
          ON pa.account_id = m.from_id
        ON CONFLICT DO NOTHING
        """,
        (froms, intos),
    )
    conn.execute("DELETE FROM profile_accounts WHERE account_id = ANY(%s)", (froms,))
