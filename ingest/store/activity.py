"""The `profile_activity` table (migration 0012): what each visitor did per UTC day, and
company activity read from it through `profile_accounts`.

Why per profile and not per company: a company's activity is then its visitors' rows,
joined at query time, so a visitor linked to a company later brings their history, an
account merge needs no row moved (`profile_accounts` already points at the survivor),
erasing a person deletes their rows, and a profile merge moves them like events. The
price is a join at read time, paid by an operator's query, not by the batch path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingest.signals import SignalRule, contributions, utc_day
from ingest.store._json import rows as json_rows

Key = tuple[int, date, str, str]  # (profile, day, metric, key)


def tally(
    items: Iterable[tuple[int | None, datetime, str, str | None, dict[str, Any]]],
    rules: tuple[SignalRule, ...],
) -> dict[Key, int]:
    """(profile, timestamp, type, event name, properties) of events -> counts per
    (profile, day, metric, key): a batch's activity, aggregated so that it is one row
    per key in one statement. Events without a profile count nowhere."""
    out: Counter[Key] = Counter()
    # calls other than pages (most are tracks) take a shortcut to what `contributions`
    # gives them: the events row, and the signals whose event rule names them
    by_event: dict[str, list[str]] = {}
    for r in rules:
        if r.kind == "event":
            by_event[r.pattern] = sorted({*by_event.get(r.pattern, []), r.name})
    for profile_id, timestamp, type_, event, properties in items:
        if profile_id is None:
            continue
        day = utc_day(timestamp)
        if type_ != "page":
            out[(profile_id, day, "events", "")] += 1
            if type_ == "track" and event in by_event:
                for name in by_event[event]:
                    out[(profile_id, day, "signal", name)] += 1
            continue
        for metric, key in contributions(type_, event, properties, rules):
            out[(profile_id, day, metric, key)] += 1
    return out


def add(conn: psycopg.Connection, project_id: int, counts: dict[Key, int]) -> None:
    """Add counts in one statement (in the batch's transaction: its deduplication keys
    make a redelivered or replayed batch a duplicate, so nothing is counted twice).
    Sorted, so two transactions meet rows in one order. The rows go as one JSON text:
    psycopg adapts five Python lists of ~1,000 items at ~13 us of client CPU per call of
    the batch, orjson at ~4 (measured in process; the server parses either at about the
    same cost)."""
    if not counts:
        return
    conn.execute(
        """
        INSERT INTO profile_activity AS a (project_id, profile_id, day, metric, key, n)
        SELECT %s, (r->>0)::bigint, (r->>1)::date, r->>2, r->>3, (r->>4)::bigint
        FROM json_array_elements(%s::json) AS r
        ON CONFLICT (profile_id, day, metric, key) DO UPDATE SET n = a.n + EXCLUDED.n
        """,
        (project_id, json_rows([[*k, counts[k]] for k in sorted(counts)])),
    )


def move(conn: psycopg.Connection, pairs: list[tuple[int, int]]) -> None:
    """A merged-away profile's activity is added to the profile it merged into."""
    if not pairs:
        return
    conn.execute(
        """
        WITH gone AS (
            DELETE FROM profile_activity a
            USING unnest(%s::bigint[], %s::bigint[]) AS m(from_id, into_id)
            WHERE a.profile_id = m.from_id
            RETURNING a.project_id, m.into_id, a.day, a.metric, a.key, a.n
        )
        INSERT INTO profile_activity AS a (project_id, profile_id, day, metric, key, n)
        SELECT project_id, into_id, day, metric, key, sum(n) FROM gone
        GROUP BY project_id, into_id, day, metric, key
        ORDER BY into_id, day, metric, key
        ON CONFLICT (profile_id, day, metric, key) DO UPDATE SET n = a.n + EXCLUDED.n
        """,
        ([f for f, _ in pairs], [t for _, t in pairs]),
    )


def rebuild(
    conn: psycopg.Connection,
    project_id: int,
    days: set[tuple[int, date]],
    rules: tuple[SignalRule, ...],
) -> None:
    """Count (profile, day)s again from their stored events: what reprocessing does for
    the days its events left and arrived on (an event's day, profile and signals may all
    change, and the rules it was first counted with may be gone, so a delta could not
    be trusted). Reads only those days' events (the profile/time index)."""
    if not days:
        return
    keys = sorted(days)
    params = ([p for p, _ in keys], [d for _, d in keys])
    rows = conn.execute(
        """
        SELECT e.profile_id, e."timestamp", e.type, e.event,
               CASE WHEN e.type = 'page' THEN jsonb_build_object(
                   'path', e.properties->'path', 'url', e.properties->'url') END
        FROM unnest(%s::bigint[], %s::date[]) AS k(p, d)
        JOIN events e ON e.profile_id = k.p
         AND e."timestamp" >= (k.d::timestamp AT TIME ZONE 'UTC')
         AND e."timestamp" < ((k.d + 1)::timestamp AT TIME ZONE 'UTC')
        """,
        params,
    ).fetchall()
    conn.execute(
        """
        DELETE FROM profile_activity a USING unnest(%s::bigint[], %s::date[]) AS k(p, d)
        WHERE a.profile_id = k.p AND a.day = k.d
        """,
        params,
    )
    add(
        conn, project_id, tally(((int(p), t, ty, ev, pr or {}) for p, t, ty, ev, pr in rows), rules)
    )


def expire(conn: psycopg.Connection, project_id: int, before: date, limit: int) -> int:
    """Delete up to `limit` rows of a project's days before `before` (retention: the
    days whose events are gone)."""
    cur = conn.execute(
        """
        DELETE FROM profile_activity WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM profile_activity
            WHERE project_id = %s AND day < %s LIMIT %s))
        """,
        (project_id, before, limit),
    )
    return cur.rowcount


def of_project(conn: psycopg.Connection, project_id: int) -> dict[Key, int]:
    """Every row of a project (tests and checks compare it with a recount)."""
    rows = conn.execute(
        "SELECT profile_id, day, metric, key, n FROM profile_activity WHERE project_id = %s",
        (project_id,),
    ).fetchall()
    return {(int(p), d, str(m), str(k)): int(n) for p, d, m, k, n in rows}


# --- company activity: visitors' rows through profile_accounts --------------------------

# A company's visitors' rows in a window. `profile_accounts` always names surviving
# accounts: an account merge moves the merged-away account's links to the survivor
# (ingest/store/accounts.py `merge`), and links are written to `found.final(...)`. So one
# company's rows start from its links (the account index), then each visitor's days (the
# primary key); all companies' rows from the project's links (only visitors of a company
# count for companies: an anonymous visitor's rows are never read here).
ALL_ROWS = """
act AS (
    SELECT pa.account_id, x.profile_id, x.day, x.metric, x.key, x.n
    FROM profile_accounts pa
    JOIN profile_activity x ON x.profile_id = pa.profile_id
    WHERE pa.project_id = %(project)s AND x.day >= %(since)s AND x.day < %(until)s
)"""
ONE_ROWS = """
act AS (
    SELECT pa.account_id, x.profile_id, x.day, x.metric, x.key, x.n
    FROM profile_accounts pa
    JOIN profile_activity x ON x.profile_id = pa.profile_id
    WHERE pa.account_id = %(account)s AND pa.project_id = %(project)s
      AND x.day >= %(since)s AND x.day < %(until)s
)"""
IDENTIFIED = """
identified AS (
    -- identified: the visitor has an email now (an identify, a form, a work email)
    SELECT DISTINCT i.profile_id FROM identities i
    WHERE i.kind = 'email' AND i.profile_id IN (SELECT profile_id FROM act)
)"""


def _rows(account: int | None) -> str:
    return f"{ALL_ROWS if account is None else ONE_ROWS},{IDENTIFIED}"


RANKED = """
WITH {rows},
per AS (
    SELECT act.account_id,
           count(DISTINCT act.profile_id) AS visitors,
           count(DISTINCT act.profile_id) FILTER (WHERE idf.profile_id IS NOT NULL)
               AS identified,
           coalesce(sum(n) FILTER (WHERE metric = 'events'), 0)::bigint AS events,
           coalesce(sum(n) FILTER (WHERE metric = 'path'), 0)::bigint AS page_views,
           coalesce(sum(n) FILTER (WHERE metric = 'signal' AND key = %(signal)s), 0)::bigint
               AS signal_n,
           max(day) AS last_day
    FROM act LEFT JOIN identified idf ON idf.profile_id = act.profile_id
    GROUP BY act.account_id
),
sig AS (
    SELECT account_id, jsonb_object_agg(key, n ORDER BY key) AS signals
    FROM (SELECT account_id, key, sum(n)::bigint AS n FROM act WHERE metric = 'signal'
          GROUP BY account_id, key) s
    GROUP BY account_id
),
ranked AS (
    SELECT per.*, CASE WHEN %(signal)s::text IS NULL THEN events ELSE signal_n END AS value
    FROM per
)
SELECT r.account_id, a.group_id, a.name,
       (SELECT min(d.domain) FROM account_domains d WHERE d.account_id = r.account_id)
           AS domain,
       a.domain AS group_domain, r.visitors, r.identified, r.events, r.page_views,
       r.last_day, coalesce(sig.signals, '{{}}'::jsonb) AS signals, r.value
FROM ranked r JOIN accounts a ON a.id = r.account_id LEFT JOIN sig USING (account_id)
WHERE r.value > 0
  AND (%(after_value)s::bigint IS NULL
       OR (r.value, r.account_id) < (%(after_value)s, %(after_id)s))
ORDER BY r.value DESC, r.account_id DESC
LIMIT %(limit)s
"""


def _window(
    project_id: int, since: date, until: date, account: int | None = None
) -> dict[str, Any]:
    return {"project": project_id, "since": since, "until": until, "account": account}


def ranked(
    conn: psycopg.Connection,
    project_id: int,
    since: date,
    until: date,
    signal: str | None,
    limit: int,
    after: tuple[int, int] | None = None,
    account: int | None = None,
) -> list[dict[str, Any]]:
    """Companies active in [since, until) (days), most active first: by their visitors'
    events, or by one signal's count (then only companies that showed it). Keyset-paged
    on (value, account id), both descending."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            RANKED.format(rows=_rows(account)),
            {
                **_window(project_id, since, until, account),
                "signal": signal,
                "limit": limit,
                "after_value": after[0] if after else None,
                "after_id": after[1] if after else None,
            },
        )
        return cur.fetchall()


def account(conn: psycopg.Connection, project_id: int, account_id: int) -> dict[str, Any] | None:
    """A project's account, with its domains and the account it was merged into."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT a.id, a.group_id, a.name, a.domain AS group_domain, a.merged_into,
                   a.created_at,
                   ARRAY(SELECT d.domain FROM account_domains d WHERE d.account_id = a.id
                         ORDER BY d.domain) AS domains
            FROM accounts a WHERE a.project_id = %s AND a.id = %s
            """,
            (project_id, account_id),
        )
        return cur.fetchone()


def company_days(
    conn: psycopg.Connection, project_id: int, account_id: int, since: date, until: date,
    top_paths: int = 5,
) -> list[dict[str, Any]]:  # fmt: skip
    """One company's days in [since, until), newest first: active and identified visitors,
    events, page views, signals and its most viewed paths."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            WITH {_rows(account_id)},
            per AS (
                SELECT day, count(DISTINCT act.profile_id) AS visitors,
                       count(DISTINCT act.profile_id) FILTER (WHERE idf.profile_id IS NOT NULL)
                           AS identified,
                       coalesce(sum(n) FILTER (WHERE metric = 'events'), 0)::bigint
                           AS events,
                       coalesce(sum(n) FILTER (WHERE metric = 'path'), 0)::bigint
                           AS page_views
                FROM act LEFT JOIN identified idf ON idf.profile_id = act.profile_id
                GROUP BY day
            ),
            sig AS (
                SELECT day, jsonb_object_agg(key, n ORDER BY key) AS signals
                FROM (SELECT day, key, sum(n)::bigint AS n FROM act WHERE metric = 'signal'
                      GROUP BY day, key) s
                GROUP BY day
            ),
            paths AS (
                SELECT day, jsonb_agg(jsonb_build_object('path', key, 'views', n)
                                      ORDER BY n DESC, key) AS paths
                FROM (SELECT day, key, sum(n)::bigint AS n,
                             row_number() OVER (PARTITION BY day ORDER BY sum(n) DESC, key)
                                 AS place
                      FROM act WHERE metric = 'path' AND key <> '' GROUP BY day, key) p
                WHERE place <= %(top)s
                GROUP BY day
            )
            SELECT per.day, per.visitors, per.identified, per.events, per.page_views,
                   coalesce(sig.signals, '{{}}'::jsonb) AS signals,
                   coalesce(paths.paths, '[]'::jsonb) AS top_paths
            FROM per LEFT JOIN sig USING (day) LEFT JOIN paths USING (day)
            ORDER BY per.day DESC
            """,
            {**_window(project_id, since, until, account_id), "top": top_paths},
        )
        return cur.fetchall()


def company_visitors(
    conn: psycopg.Connection, project_id: int, account_id: int, since: date, until: date,
    limit: int = 100,
) -> list[dict[str, Any]]:  # fmt: skip
    """One company's visitors active in [since, until), most active first."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"""
            WITH {_rows(account_id)}
            SELECT act.profile_id,
                   (SELECT min(i.value) FROM identities i
                    WHERE i.profile_id = act.profile_id AND i.kind = 'email') AS email,
                   coalesce(sum(n) FILTER (WHERE metric = 'events'), 0)::bigint AS events,
                   coalesce(sum(n) FILTER (WHERE metric = 'path'), 0)::bigint
                       AS page_views,
                   coalesce(jsonb_object_agg(key, n) FILTER (WHERE metric = 'signal'),
                            '{{}}'::jsonb) AS signals,
                   min(day) AS first_day, max(day) AS last_day
            FROM act
            GROUP BY act.profile_id
            ORDER BY events DESC, act.profile_id
            LIMIT %(limit)s
            """,
            {**_window(project_id, since, until, account_id), "limit": limit},
        )
        rows = cur.fetchall()
    for row in rows:
        row["identified"] = row["email"] is not None
    return rows


def recent_page_views(
    conn: psycopg.Connection, project_id: int, account_id: int, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest page views of a company's visitors (from the events)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            """
            SELECT v.* FROM profile_accounts pa
            CROSS JOIN LATERAL (
                -- each visitor's newest page views (the profile/time index), then the
                -- newest of them all
                SELECT e.id, e.profile_id, e."timestamp", e.name,
                       e.properties->>'path' AS path, e.properties->>'url' AS url
                FROM events e
                WHERE e.profile_id = pa.profile_id AND e.type = 'page'
                ORDER BY e."timestamp" DESC, e.id DESC
                LIMIT %(limit)s
            ) v
            WHERE pa.account_id = %(account)s AND pa.project_id = %(project)s
            ORDER BY v."timestamp" DESC, v.id DESC
            LIMIT %(limit)s
            """,
            {"project": project_id, "account": account_id, "limit": limit},
        )
        return cur.fetchall()
