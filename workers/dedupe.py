"""Dedupe: each (project, messageId) is stored once; PostgreSQL's unique key decides.

Within a batch the first occurrence wins; against the store, `message_ids.claim` inserts
the keys and only the ones this transaction inserted go on. A repeat whose content
differs from what was first stored is a *conflicting* duplicate: kept out, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from ingest.store import message_ids
from workers.normalize import Event


@dataclass(slots=True)
class Deduped:
    new: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    conflicting: list[Event] = field(default_factory=list)


def dedupe(conn: psycopg.Connection, events: list[Event]) -> Deduped:
    out = Deduped()
    first: dict[tuple[int, str], Event] = {}
    for event in events:
        key = (event.project_id, event.message_id)
        seen = first.get(key)
        if seen is None:
            first[key] = event
            continue
        out.duplicates.append(event)
        if seen.content_hash != event.content_hash:
            out.conflicting.append(event)
    owned = message_ids.claim(conn, {key: e.content_hash for key, e in first.items()})
    repeated = [key for key in first if key not in owned]
    stored = message_ids.content_hashes(conn, repeated)
    for key in repeated:
        event = first[key]
        out.duplicates.append(event)
        if stored.get(key) != event.content_hash:
            out.conflicting.append(event)
    out.new = [
        e
        for e in events
        if (e.project_id, e.message_id) in owned and first[(e.project_id, e.message_id)] is e
    ]
    return out
