"""The grown-store stage: fill the store to a year's size, then run the same mix on top.

Issue #17 asks that CPU per call stay within 1.25x of the empty store's when the store holds
10 million events, 1 million profiles and 10 million deduplication keys, and that the query
plans of the batch's statements stay the same. Two parts:

- `fill`: the history, written server-side with `INSERT ... SELECT generate_series` (no row
  crosses the wire; PostgreSQL does the work COPY would, minus the parsing) into the very
  project the run on top sends to, so every per-project index range is as large as a
  year-old project's. Its values never meet the mix's (`fill-` ids, `@fillN.com` emails),
  and the reconciliation reads the counters, which the fill leaves alone, so the run on
  top still reconciles exactly. It fills every table a batch reads or
  writes through an index: events (all four indexes), profiles, identities (two or three
  per profile: an email for half of them), message_ids, companies (997 domains, their
  accounts and members), deletions (one per 100 profiles) and processed_batches.
  The values are shaped like the mix's (ids of the same lengths, payloads of the same size),
  so each index grows as it would.
- `plans`: one batch of the mix applied in process through the worker's own code
  (workers.pipeline.process) with every statement recorded; before each one runs, its plan
  is taken with `EXPLAIN (FORMAT JSON)` in the same transaction (so it sees what the
  statement sees), and the whole batch is rolled back. A plan is summarized as its node
  types with the index or table each reads; `compare` lists the statements whose plan
  changed between the empty and the grown store. Both stores are analyzed first: a plan
  taken without statistics differs for that reason alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from ingest.message import QueuedRequest


@dataclass(frozen=True)
class Size:
    events: int
    profiles: int
    keys: int

    @classmethod
    def scaled(cls, events: int) -> Size:
        """The issue's proportions: 10 events and 10 dedup keys per profile."""
        return cls(events=events, profiles=max(1, events // 10), keys=events)


# Statements of the fill, run in order; %(project)s, %(events)s, %(profiles)s, %(keys)s.
# Profiles get ids from the identity column: the first one is read back so the rest of the
# fill can name them as `first + n`.
FILL = {
    "profiles": """
        INSERT INTO profiles (project_id, traits, trait_timestamps, event_count, first_seen,
                              last_seen)
        SELECT %(project)s,
               jsonb_build_object('plan', 'pro', 'seats', g %% 50),
               jsonb_build_object('plan', '2026-01-01T00:00:00Z', 'seats', '2026-01-01T00:00:00Z'),
               10, now() - interval '365 days' + (g %% 365) * interval '1 day', now()
        FROM generate_series(1, %(profiles)s) AS g
    """,
    "identities": """
        INSERT INTO identities (project_id, kind, value, profile_id)
        SELECT %(project)s, k.kind,
               CASE k.kind
                 WHEN 'anonymous_id' THEN 'fill-anon-' || p.id
                 WHEN 'profile_id' THEN 'fill-ko-' || p.id
                 ELSE 'person' || p.id || '@fill' || (p.id %% 997) || '.com' END,
               p.id
        FROM profiles AS p
        CROSS JOIN (VALUES ('anonymous_id'), ('profile_id'), ('email')) AS k (kind)
        WHERE p.project_id = %(project)s AND (k.kind <> 'email' OR p.id %% 2 = 0)
    """,
    "message_ids": """
        INSERT INTO message_ids (project_id, message_id, content_hash, first_seen)
        SELECT %(project)s, 'fill-' || md5(g::text), decode(md5('h' || g), 'hex'),
               now() - (g %% 86400) * interval '1 second'
        FROM generate_series(1, %(keys)s) AS g
    """,
    "events": """
        INSERT INTO events (project_id, message_id, profile_id, type, event, name, properties,
                            context, "timestamp", received_at, source, payload, identifiers)
        SELECT %(project)s, 'fill-' || md5(g::text), %(first)s + g %% %(profiles)s,
               CASE WHEN g %% 7 = 0 THEN 'page' ELSE 'track' END,
               CASE WHEN g %% 7 = 0 THEN NULL ELSE 'Viewed Pricing' END,
               CASE WHEN g %% 7 = 0 THEN 'Pricing' END,
               jsonb_build_object('profile_id', 'fill-ko-' || (%(first)s + g %% %(profiles)s),
                                  'plan', 'pro', 'value', g %% 1000, 'path', '/pricing'),
               %(context)s::jsonb,
               now() - interval '365 days' + (g::float8 / %(events)s) * interval '365 days',
               now() - interval '365 days' + (g::float8 / %(events)s) * interval '365 days',
               'segment',
               jsonb_build_object('type', 'track', 'event', 'Viewed Pricing',
                                  'messageId', 'fill-' || md5(g::text),
                                  'anonymousId', 'fill-anon-' || (%(first)s + g %% %(profiles)s),
                                  'properties', jsonb_build_object('plan', 'pro'),
                                  'context', %(context)s::jsonb),
               ARRAY['anonymous_id:fill-anon-' || (%(first)s + g %% %(profiles)s),
                     'profile_id:fill-ko-' || (%(first)s + g %% %(profiles)s)]
        FROM generate_series(1, %(events)s) AS g
    """,
    "accounts": """
        INSERT INTO accounts (project_id, domain)
        SELECT %(project)s, 'fill' || g || '.com' FROM generate_series(0, 996) AS g
    """,
    "account_domains": """
        INSERT INTO account_domains (project_id, domain, account_id)
        SELECT %(project)s, domain, id FROM accounts WHERE project_id = %(project)s
    """,
    "profile_accounts": """
        INSERT INTO profile_accounts (profile_id, account_id, project_id)
        SELECT i.profile_id, d.account_id, %(project)s
        FROM identities AS i
        JOIN account_domains AS d
          ON d.project_id = %(project)s AND d.domain = split_part(i.value, '@', 2)
        WHERE i.project_id = %(project)s AND i.kind = 'email'
    """,
    "deletions": """
        INSERT INTO deletions (project_id, message_id, identifiers, received_at, deleted_at,
                               profiles, events, identities, dead_letters, rejections)
        SELECT %(project)s, 'fill-delete-' || g, ARRAY['user_id:fill-deleted-' || g],
               now() - (g %% 60) * interval '1 day', now() - (g %% 60) * interval '1 day',
               1, 10, 3, 0, 0
        FROM generate_series(1, greatest(1, %(profiles)s / 100)) AS g
    """,
    "processed_batches": """
        INSERT INTO processed_batches (task_id, processed_at)
        SELECT 'fill-' || md5('b' || g), now() - (g %% 86400) * interval '1 second'
        FROM generate_series(1, greatest(1, %(events)s / 100)) AS g
    """,
}

CONTEXT = orjson.dumps(
    {
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "ip": "10.0.0.1",
        "userAgent": "Mozilla/5.0 (bench)",
    }
).decode()


def fill(database_url: str, project_id: int, size: Size, log: Any) -> dict[str, Any]:
    """Write the history into the project; return what each step took and the store's
    size after it."""
    took: dict[str, float] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        params: dict[str, Any] = {
            "project": project_id,
            "events": size.events,
            "profiles": size.profiles,
            "keys": size.keys,
            "context": CONTEXT,
        }
        for step, statement in FILL.items():
            if step == "events":
                row = conn.execute(
                    "SELECT min(id) FROM profiles WHERE project_id = %s", (project_id,)
                ).fetchone()
                params["first"] = int(row[0]) if row and row[0] is not None else 0
            log(f"grown store: filling {step}")
            started = time.perf_counter()
            conn.execute(statement, params)
            took[step] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        took["vacuum_analyze"] = time.perf_counter() - started
        return {"seconds": took, "sizes": sizes(conn)}


def sizes(conn: psycopg.Connection) -> dict[str, dict[str, int]]:
    """Rows (estimated) and bytes of each table and index a batch touches."""
    out: dict[str, dict[str, int]] = {}
    tables = ("events", "profiles", "identities", "message_ids", "accounts",
              "profile_accounts", "deletions", "processed_batches")  # fmt: skip
    for table in tables:
        row = conn.execute(
            "SELECT reltuples::bigint, pg_table_size(oid), pg_indexes_size(oid)"
            " FROM pg_class WHERE relname = %s AND relkind = 'r'",
            (table,),
        ).fetchone()
        if row:
            out[table] = {"rows": int(row[0]), "table_bytes": int(row[1]),
                          "index_bytes": int(row[2])}  # fmt: skip
    return out


# --- plans of the batch's statements ---------------------------------------------------


class _Recording(psycopg.Cursor[Any]):
    """A cursor that takes the plan of each statement before running it."""

    plans: list[dict[str, Any]]

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        text = query.as_string(self.connection) if isinstance(query, sql.Composable) else query
        if isinstance(text, bytes):
            text = text.decode()
        head = text.lstrip().split(None, 1)[0].upper() if text.strip() else ""
        if head in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
            with psycopg.Cursor(self.connection) as explain:
                explain.execute(f"EXPLAIN (FORMAT JSON) {text}", params)
                row = explain.fetchone()
                plan = row[0][0]["Plan"] if row else {}
            self.plans.append({"statement": " ".join(text.split())[:160], "shape": shape(plan)})
        return super().execute(query, params, **kwargs)


def shape(plan: dict[str, Any]) -> list[str]:
    """A plan as its nodes, depth first: node type, and the index or table it reads."""
    out: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        what = node.get("Index Name") or node.get("Relation Name") or ""
        out.append("  " * depth + node["Node Type"] + (f" on {what}" if what else ""))
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    walk(plan, 0)
    return out


def plans(database_url: str, request: QueuedRequest, rules: Any) -> list[dict[str, Any]]:
    """The plan of every statement one batch runs, taken in its transaction, rolled back."""
    from workers.pipeline import process

    with psycopg.connect(database_url) as conn:
        recorded: list[dict[str, Any]] = []

        class Recording(_Recording):
            plans = recorded

        conn.cursor_factory = Recording
        try:
            process(conn, [request], rules)
        finally:
            conn.rollback()
    return recorded


def compare(empty: list[dict[str, Any]], grown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements whose plan is not the same on both stores (matched in order)."""
    changed = [
        {"statement": a["statement"], "empty": a["shape"], "grown": b["shape"]}
        for a, b in zip(empty, grown, strict=False)
        if a["shape"] != b["shape"]
    ]
    if len(empty) != len(grown):
        changed.append({"statement": f"{len(empty)} statements against {len(grown)}"})
    return changed


def request_of(body: bytes, project_id: int) -> QueuedRequest:
    """The message the receiver would queue for one of the mix's request bodies."""
    calls = orjson.loads(body)["batch"]
    stamp = "2026-11-20T00:00:01.000Z"
    return QueuedRequest(
        project_id=project_id,
        source="segment",
        received_at=stamp,
        calls=[dict(c, messageId="plan-" + c["messageId"], receivedAt=stamp) for c in calls],
        rejected=[],
        shared=None,
    )


def summary(items: list[dict[str, Any]]) -> Iterator[str]:
    for item in items:
        yield item["statement"]
        yield from ("    " + line for line in item["shape"])
