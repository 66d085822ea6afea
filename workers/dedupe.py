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
    repeats: list[Event] = []
    for event in events:
        key = (event.project_id, event.message_id)
        if key in first:
            repeats.append(event)
        else:
            first[key] = event
    owned = message_ids.claim(conn, {key: e.content_hash for key, e in first.items()})
    seen_before = [key for key in first if key not in owned]
    # What a repeat is compared with: the content stored first, before or in this batch.
    reference = {key: e.content_hash for key, e in first.items() if key in owned}
    reference.update(message_ids.content_hashes(conn, seen_before))
    for event in [first[key] for key in seen_before] + repeats:
        out.duplicates.append(event)
        if reference.get((event.project_id, event.message_id)) != event.content_hash:
            out.conflicting.append(event)
    out.new = [first[key] for key in first if key in owned]
    return out
