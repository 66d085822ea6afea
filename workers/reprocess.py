"""Reprocess: stored events through today's rules again, in place.

For a bounded batch of stored events (a slice of a project's history, or the events the
identity check found), inside one transaction:

1. normalize each original payload again (an event the rules now refuse is left as it
   is and reported);
2. lock its identifiers, old and new, and the profiles holding them or the events, in the
   same order as live batches, so reprocessing runs beside live traffic;
3. retire the identifiers the events derived under the old rules and no longer do, unless
   another event of the holder still derives them (a profile that held `ann+news@acme.com`
   stops holding it once no event says so, and can merge with `ann@acme.com`);
4. resolve the events against the graph with the same guarded rules as live batches
   (merges, refused merges, new identifiers, traits newest-wins);
5. rewrite the events' derived columns and profile in place: an event is never inserted
   again, so nothing is doubled, and its messageId, payload and receipt time stay.

Event counts move relatively: resolve counts each event on its new profile, as for a new
event, so each event is taken off the profile it was counted on before.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ingest.identifiers import Rules
from ingest.signals import utc_day
from ingest.store import activity, audiences, events, identities, locks, profiles
from workers import apply
from workers.normalize import Event, NormalizeError, normalize
from workers.resolve import Key, event_keys, lookup_keys, resolve

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _key(text: str) -> Key:
    kind, _, value = text.partition(":")
    return kind, value


def _old_keys(project_id: int, row: dict[str, Any], rules: Rules) -> list[Key]:
    """The identifiers the event was resolved by: as recorded, or, for an event stored
    before they were recorded (NULL), as the rules without any optional rule derive them
    (the rules of that time, short of a changed blocked list)."""
    if row["identifiers"] is not None:
        return [_key(k) for k in row["identifiers"]]
    try:
        return event_keys(renormalize(project_id, row, Rules(rules.blocked)))
    except NormalizeError:
        return []


def renormalize(project_id: int, row: dict[str, Any], rules: Rules) -> Event:
    """The event a stored row's original payload becomes under `rules`."""
    call = dict(row["payload"])
    shared = call.pop("$shared", None) if row["source"] == "koala" else None
    return normalize(project_id, row["source"], call, shared, rules)


def reprocess(
    conn: psycopg.Connection, project_id: int, rows: list[dict[str, Any]], rules: Rules
) -> Outcome:
    """Reprocess stored events of one project (rows from `events.in_range`/`by_ids`)."""
    out = Outcome()
    batch: list[tuple[dict[str, Any], Event]] = []
    for row in rows:
        try:
            batch.append((row, renormalize(project_id, row, rules)))
        except NormalizeError as error:
            out.counts["failed"] += 1
            out.errors.append({"event_id": row["id"], "reason": error.reason, "error": str(error)})
    if not batch:
        return out
    new_keys = {row["id"]: event_keys(event) for row, event in batch}
    old_keys = {row["id"]: _old_keys(project_id, row, rules) for row, _ in batch}
    every_key = sorted({k for keys in (*new_keys.values(), *old_keys.values()) for k in keys})
    ids = [row["id"] for row, _ in batch]
    before = {row["profile_id"] for row, _ in batch if row["profile_id"] is not None}
    apply.lock_identities(conn, project_id, every_key, also_profiles=before)
    # Read again under the locks: a merge that committed meanwhile may have moved them to
    # a profile not locked yet (lock it too: its count changes below).
    counted_on = events.profiles_of(conn, ids)
    moved_meanwhile = sorted({p for p in counted_on.values() if p is not None} - before)
    if moved_meanwhile:
        locks.profiles(conn, project_id, moved_meanwhile)
        counted_on = events.profiles_of(conn, ids)

    # An event without any identifier has nothing to resolve by: it stays on its profile
    # (resolving it would give it a new, empty one at every pass).
    anchored = [(r, e) for r, e in batch if not new_keys[r["id"]] and counted_on.get(r["id"])]
    batch = [(r, e) for r, e in batch if new_keys[r["id"]] or not counted_on.get(r["id"])]
    derived_now = {k for keys in new_keys.values() for k in keys}
    stale = [k for i in ids for k in old_keys[i] if k not in derived_now]
    out.counts["identifiers_retired"] += identities.retire(conn, project_id, stale, ids)

    evs = [event for _, event in batch]
    graph = apply.graph_of(conn, identities.owners(conn, project_id, lookup_keys(evs)))
    plan = resolve(evs, graph)
    real = apply.apply_graph(conn, project_id, evs, plan, graph)

    # (an anchored event follows its profile if this batch merged that profile away)
    rewrites = [
        (r["id"], e, real(int(counted_on[r["id"]] or 0)), apply.identifiers_of(e))
        for r, e in anchored
    ]
    deltas: Counter[int] = Counter()
    for (row, event), assigned in zip(batch, plan.assignments, strict=True):
        profile = real(assigned)
        previous = counted_on.get(row["id"])
        if previous is not None:
            deltas[real(previous)] -= 1  # resolve counted it again on `profile`
        if previous is not None and real(previous) != profile:
            out.counts["moved"] += 1
        rewrites.append((row["id"], event, profile, apply.identifiers_of(event)))
    profiles.add_counts(conn, dict(deltas))
    events.rewrite(conn, rewrites)
    # Engage calls: rewritten in place on the event's profile (stored history gains them)
    apply.apply_engage(
        conn, project_id, [e for _, e, _, _ in rewrites], [p for _, _, p, _ in rewrites]
    )
    audiences.forget(
        conn, project_id, [e.message_id for _, e, _, _ in rewrites if e.engage is None]
    )
    # Activity: count again the days the events were counted on (their profile as merged
    # now) and the days they are on now, from the rewritten events.
    when = {row["id"]: row["timestamp"] for row, _ in batch}
    when.update({row["id"]: row["timestamp"] for row, _ in anchored})
    days = {(profile, utc_day(event.timestamp)) for _, event, profile, _ in rewrites}
    days |= {
        (real(int(previous)), utc_day(when[event_id]))
        for event_id, previous in counted_on.items()
        if previous is not None and event_id in when
    }
    activity.rebuild(conn, project_id, days, rules.signals)
    out.counts["reprocessed"] += len(batch) + len(anchored)
    out.counts["merges"] += len(plan.merges)
    out.counts["merges_refused"] += len(plan.refused)
    return out
