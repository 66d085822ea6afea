"""Apply: load (and lock) the identity graph a batch touches, then write the batch's plan
with set-based statements, all inside the batch's one transaction.

Lock order, the same in every worker so batches cannot deadlock on each other: dedup keys
(claimed sorted), then the stripes of the batch's identifiers, then the stripes of the
profiles they lead to, then those of its company domains (advisory locks, ascending;
ingest/store/locks.py). Two workers resolving the first calls of one new visitor at once
therefore run one after the other, and the second finds the first's profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from ingest.signals import SignalRule
from ingest.store import (
    accounts,
    activity,
    audiences,
    deletions,
    events,
    identities,
    locks,
    merges,
    profiles,
)
from ingest.store.profiles import ProfileRow
from workers import companies
from workers.normalize import Event
from workers.resolve import Graph, Key, Merge, Plan, Profile, event_keys, lookup_keys

MAX_LOCK_ROUNDS = 5


def lock_identities(
    conn: psycopg.Connection,
    project_id: int,
    keys: list[Key],
    also_profiles: Iterable[int] = (),
) -> dict[Key, int]:
    """Lock the identifiers' stripes, then the stripes of the profiles holding them (and of
    `also_profiles`); return who holds each identifier once everything is locked."""
    locks.identifiers(conn, project_id, keys)
    owners = identities.owners(conn, project_id, keys)
    held: set[int] = set()  # profile stripes
    extra = set(also_profiles)
    for _ in range(MAX_LOCK_ROUNDS):
        # Lock the profiles found, then look again: a merge that committed meanwhile may
        # have moved an identifier to a profile not yet locked. A profile whose stripe was
        # held before this look cannot have lost an identifier since: nothing to look for.
        need = {locks.profile_stripe(p) for p in set(owners.values()) | extra} - held
        if not need:
            break
        locks.lock(conn, project_id, locks.PROFILE, need)
        held |= need
        owners = identities.owners(conn, project_id, keys)
    return owners


def graph_of(conn: psycopg.Connection, owners: dict[Key, int]) -> Graph:
    """The identity graph of the (already locked) profiles holding `owners`' identifiers."""
    ids = sorted(set(owners.values()))
    rows = profiles.load(conn, ids)
    emails = identities.emails_of(conn, ids)
    graph = Graph(owner=owners)
    for profile_id, row in rows.items():
        graph.profiles[profile_id] = Profile(
            id=profile_id,
            email=emails.get(profile_id),
            traits=dict(row.traits),
            trait_times=dict(row.trait_times),
            event_count=row.event_count,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
        )
    return graph


def load_graph(conn: psycopg.Connection, project_id: int, batch: list[Event]) -> Graph:
    return graph_of(conn, lock_identities(conn, project_id, lookup_keys(batch)))


def identifiers_of(event: Event) -> list[str]:
    """What `events.identifiers` records: the event's identifiers as `kind:value`."""
    return [f"{kind}:{value}" for kind, value in event_keys(event)]


def apply_plan(
    conn: psycopg.Connection,
    project_id: int,
    batch: list[Event],
    plan: Plan,
    graph: Graph,
    signals: tuple[SignalRule, ...] = (),
) -> None:
    """Write a new batch: the graph's changes, then its events (COPY), then what they add
    to their visitors' activity (one statement, counted on the stored profiles)."""
    real = apply_graph(conn, project_id, batch, plan, graph)
    stored_on = [real(p) for p in plan.assignments]
    events.insert(conn, batch, stored_on, [identifiers_of(e) for e in batch])
    activity.add(
        conn,
        project_id,
        activity.tally(
            (
                (p, e.timestamp, e.type, e.event, e.properties)
                for p, e in zip(stored_on, batch, strict=True)
            ),
            signals,
        ),
    )
    apply_engage(conn, project_id, batch, stored_on)


def apply_engage(
    conn: psycopg.Connection, project_id: int, batch: list[Event], profile_ids: list[int]
) -> None:
    """The batch's Engage audience memberships and computed traits, on the profiles their
    calls were stored on (ingest/audiences.py): one statement, none when there are none."""
    audiences.record(
        conn,
        project_id,
        [
            audiences.Row(e.message_id, p, e.timestamp, e.engage)
            for e, p in zip(batch, profile_ids, strict=True)
            if e.engage is not None
        ],
    )


def apply_graph(
    conn: psycopg.Connection, project_id: int, batch: list[Event], plan: Plan, graph: Graph
) -> Callable[[int], int]:
    """Write the plan's profiles, merges, identities and accounts; return the mapping of
    the plan's profile ids (temporary ones included) to the stored profiles."""
    temp = sorted((p.id for p in graph.profiles.values() if p.new), reverse=True)
    remap = dict(zip(temp, profiles.allocate_ids(conn, len(temp)), strict=True))

    def real(profile_id: int) -> int:
        final = graph.final(profile_id)
        return remap.get(final, final)

    profiles.upsert(
        conn,
        project_id,
        [
            ProfileRow(
                real(p.id), p.traits, p.trait_times, p.event_count, p.first_seen, p.last_seen
            )
            for p in plan.changed_profiles(graph)
        ],
    )
    pairs = [(m.from_profile, real(m.into_profile)) for m in plan.merges]
    identities.move(conn, pairs)
    events.move(conn, pairs)
    audiences.move(conn, pairs)
    activity.move(conn, pairs)
    accounts.move_links(conn, pairs)
    profiles.mark_merged(conn, pairs)
    # A merge names the profile merged away as it was; a refused merge names both sides as
    # they end up (either may be a profile this batch created).
    log = [Merge(m.from_profile, real(m.into_profile), m.reason, m.message_id) for m in plan.merges]
    log += [
        Merge(real(m.from_profile), real(m.into_profile), m.reason, m.message_id, True)
        for m in plan.refused
    ]
    merges.log(conn, project_id, log)
    identities.insert(conn, project_id, {key: real(p) for key, p in plan.new_identities.items()})
    apply_accounts(conn, project_id, batch, plan, real)
    return real


def apply_accounts(
    conn: psycopg.Connection,
    project_id: int,
    batch: list[Event],
    plan: Plan,
    real: Callable[[int], int],
) -> None:
    """Group accounts, the one company of each domain the batch names (work emails, group
    domains; workers/companies.py), the merges that follows from them, and who belongs
    where: a fixed handful of statements per batch."""
    latest: dict[str, dict[str, Any]] = {}
    carried_by: dict[str, tuple[str, str]] = {}  # group_id -> (company domain, message)
    for event in batch:
        if event.account is not None:
            group_id = event.account["group_id"]
            latest[group_id] = event.account
            company = event.account.get("company")
            if company:
                carried_by[group_id] = (company, event.message_id)
            else:
                carried_by.pop(group_id, None)
    domains = sorted({d for _, d in plan.company_links} | {d for d, _ in carried_by.values()})
    accounts.lock_domains(conn, project_id, domains)  # before any account row is written
    account_ids = accounts.upsert(conn, project_id, list(latest.values()))
    held = accounts.holders(conn, project_id, domains)
    carried: dict[str, list[tuple[int, str | None]]] = {}
    for group_id, (domain, message_id) in carried_by.items():
        carried.setdefault(domain, []).append((account_ids[group_id], message_id))
    created = accounts.create_for_domains(
        conn, project_id, [d for d in domains if d not in held and d not in carried]
    )
    found = companies.decide(carried, held, created)
    accounts.claim_domains(
        conn, project_id, {d: a for d, a in found.owner.items() if d not in held}
    )
    accounts.merge(conn, project_id, found.merges)
    links = [(real(p), found.final(account_ids[g])) for p, g in plan.account_links]
    links += [(real(p), found.owner[d]) for p, d in plan.company_links]
    accounts.link(conn, project_id, links)


def erase(conn: psycopg.Connection, event: Event) -> deletions.Erased:
    """Carry out a delete call: erase the person its identifiers lead to, and record it.

    Takes the identifier stripes, then the profile stripes, like a batch: a concurrent batch
    of the same person waits, then finds nothing and starts a new profile. (The locks come
    after the batch's own: a rare deadlock with another batch is retried.)"""
    keys = event.ids.pairs()
    owners = lock_identities(conn, event.project_id, keys)
    erased = deletions.erase(
        conn,
        event.project_id,
        sorted(set(owners.values())),
        user_ids=[v for k, v in keys if k == "user_id"],
        anonymous_ids=[v for k, v in keys if k == "anonymous_id"],
    )
    deletions.record(
        conn,
        event.project_id,
        event.message_id,
        [f"{kind}:{value}" for kind, value in keys],
        event.received_at,
        erased,
    )
    return erased
