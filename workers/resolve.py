"""Resolve: which visitor profile each event belongs to. Pure rules, no I/O.

The identity graph maps identifiers (email, Koala profile_id, Segment userId and
anonymousId) to profiles. For each event, in arrival order:

- the *target* is the profile of the email the event carries; without an email, the
  profile found through the event's strongest identifier (email > user_id > profile_id >
  anonymous_id); with none known, a new profile;
- every other profile the event's identifiers lead to is merged into the target, unless
  the merge would give one profile two different emails. That merge is refused and
  logged (a shared browser, colleagues on one laptop), and the identifiers of the refused
  profile stay where they are;
- identifiers nobody holds yet are attached to the target.

A profile therefore never holds two emails. An `alias` call's `previousId` is looked up
as a userId and as an anonymousId and is the weakest identifier, so the previous
profile merges into the userId's, under the same guard.

An event whose email is on a work domain (its `company`, ingest/companies.py) puts its
profile in that domain's company (`Plan.company_links`); which account that company is,
workers/companies.py decides when the plan is written.

`resolve()` works on a `Graph` the caller loaded (and locked) for the batch's
identifiers, and returns a `Plan` the store applies with set-based SQL. New profiles get
negative temporary ids until the store allocates real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workers.normalize import Event

STRENGTH = ("email", "user_id", "profile_id", "anonymous_id")

Key = tuple[str, str]  # (kind, value)


@dataclass(slots=True)
class Profile:
    """A profile's state as the batch sees it (loaded, or created by the batch)."""

    id: int
    email: str | None = None
    traits: dict[str, Any] = field(default_factory=dict)
    trait_times: dict[str, str] = field(default_factory=dict)  # trait -> ISO timestamp
    event_count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    new: bool = False
    changed: bool = False


@dataclass(frozen=True, slots=True)
class Merge:
    from_profile: int
    into_profile: int
    reason: str
    message_id: str
    refused: bool = False


@dataclass(slots=True)
class Graph:
    """Who holds which identifier, and the profiles involved, for one project."""

    owner: dict[Key, int] = field(default_factory=dict)
    profiles: dict[int, Profile] = field(default_factory=dict)
    redirect: dict[int, int] = field(default_factory=dict)  # merged-away id -> survivor
    _next_temp: int = -1

    def final(self, profile_id: int) -> int:
        """The profile an id ends up as after the batch's merges."""
        while profile_id in self.redirect:
            profile_id = self.redirect[profile_id]
        return profile_id

    def new_profile(self) -> Profile:
        profile = Profile(id=self._next_temp, new=True, changed=True)
        self._next_temp -= 1
        self.profiles[profile.id] = profile
        return profile


@dataclass(slots=True)
class Plan:
    """What the store must write for the batch."""

    assignments: list[int] = field(default_factory=list)  # event index -> profile id
    new_identities: dict[Key, int] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    refused: list[Merge] = field(default_factory=list)
    account_links: set[tuple[int, str]] = field(default_factory=set)  # (profile, group_id)
    # (profile, company domain): the visitor's work email puts them in that company
    company_links: set[tuple[int, str]] = field(default_factory=set)

    def changed_profiles(self, graph: Graph) -> list[Profile]:
        merged_away = {m.from_profile for m in self.merges}
        return [p for p in graph.profiles.values() if p.changed and p.id not in merged_away]


def event_keys(event: Event) -> list[Key]:
    """The event's identifiers, strongest first (alias `previousId` last, as both kinds)."""
    keys = [(kind, value) for kind, value in event.ids.pairs()]
    keys.sort(key=lambda k: STRENGTH.index(k[0]))
    if event.type == "alias" and event.previous_id:
        for kind in ("user_id", "anonymous_id"):
            key = (kind, event.previous_id)
            if key not in keys:
                keys.append(key)
    return keys


def lookup_keys(events: list[Event]) -> list[Key]:
    """Every identifier the batch needs looked up (and locked), in a stable order."""
    return sorted({key for event in events for key in event_keys(event)})


def _compatible(a: Profile, b: Profile, email: str | None) -> bool:
    emails = {e for e in (a.email, b.email, email) if e}
    return len(emails) <= 1


def _found(graph: Graph, keys: list[Key]) -> Iterator[Profile]:
    seen: set[int] = set()
    for key in keys:
        owner = graph.owner.get(key)
        if owner is not None and owner not in seen:
            seen.add(owner)
            yield graph.profiles[owner]


def resolve(events: list[Event], graph: Graph) -> Plan:
    plan = Plan()
    refused_pairs: set[tuple[int, int]] = set()
    for event in events:
        keys = event_keys(event)
        email = event.ids.email
        found = list(_found(graph, keys))
        target = _choose_target(graph, found, email)
        if target is None:
            target = graph.new_profile()
        if email and target.email is None:
            target.email = email
            target.changed = True
        for other in found:
            if other.id == target.id:
                continue
            if _compatible(other, target, email):
                _merge(graph, plan, other, target, event, "shared_identifier")
            elif (other.id, target.id) not in refused_pairs:
                refused_pairs.add((other.id, target.id))
                plan.refused.append(
                    Merge(other.id, target.id, "email_conflict", event.message_id, refused=True)
                )
        for key in keys:
            if key not in graph.owner and not _is_alias_guess(event, key):
                graph.owner[key] = target.id
                plan.new_identities[key] = target.id
        if event.type == "alias" and event.previous_id:
            _attach_previous_id(graph, plan, event, target)
        _count_event(target, event)
        if event.type == "identify" or (event.source == "koala" and event.traits):
            _merge_traits(target, event.traits, event.timestamp.isoformat(timespec="microseconds"))
        if event.account is not None:
            plan.account_links.add((target.id, event.account["group_id"]))
        if event.company is not None:
            plan.company_links.add((target.id, event.company))
        plan.assignments.append(target.id)
    return plan


def _is_alias_guess(event: Event, key: Key) -> bool:
    """An alias' previousId is looked up as two kinds; it is attached as one (below)."""
    return event.type == "alias" and key[1] == event.previous_id and key not in (event.ids.pairs())


def _attach_previous_id(graph: Graph, plan: Plan, event: Event, target: Profile) -> None:
    assert event.previous_id is not None
    as_user = ("user_id", event.previous_id)
    as_anon = ("anonymous_id", event.previous_id)
    if as_user in graph.owner or as_anon in graph.owner:
        return
    graph.owner[as_anon] = target.id
    plan.new_identities[as_anon] = target.id


def _choose_target(graph: Graph, found: list[Profile], email: str | None) -> Profile | None:
    if email:
        holder = graph.owner.get(("email", email))
        if holder is not None:
            return graph.profiles[holder]
        # The email is new: the strongest profile without another email takes it.
        for profile in found:
            if profile.email is None:
                return profile
        return None
    return found[0] if found else None


def _merge(
    graph: Graph, plan: Plan, source: Profile, into: Profile, event: Event, reason: str
) -> None:
    """Fold `source` into `into`: identifiers, counts, times, traits (newest wins)."""
    for key, owner in list(graph.owner.items()):
        if owner == source.id:
            graph.owner[key] = into.id
            if key in plan.new_identities:
                plan.new_identities[key] = into.id
    for merge_index, merge in enumerate(plan.merges):  # earlier merges into source move on
        if merge.into_profile == source.id:
            plan.merges[merge_index] = Merge(
                merge.from_profile, into.id, merge.reason, merge.message_id
            )
    plan.assignments = [into.id if p == source.id else p for p in plan.assignments]
    plan.account_links = {(into.id if p == source.id else p, g) for p, g in plan.account_links}
    plan.company_links = {(into.id if p == source.id else p, d) for p, d in plan.company_links}
    into.email = into.email or source.email
    into.event_count += source.event_count
    into.first_seen = _min(into.first_seen, source.first_seen)
    into.last_seen = _max(into.last_seen, source.last_seen)
    for name, value in source.traits.items():
        _set_trait(into, name, value, source.trait_times.get(name, ""))
    into.changed = True
    del graph.profiles[source.id]
    graph.redirect[source.id] = into.id
    if source.new:
        return  # never written: nothing to move in the store
    plan.merges.append(Merge(source.id, into.id, reason, event.message_id))


def _count_event(profile: Profile, event: Event) -> None:
    profile.event_count += 1
    profile.first_seen = _min(profile.first_seen, event.timestamp)
    profile.last_seen = _max(profile.last_seen, event.timestamp)
    profile.changed = True


def _merge_traits(profile: Profile, traits: dict[str, Any], at: str) -> None:
    for name, value in traits.items():
        _set_trait(profile, name, value, at)


def _set_trait(profile: Profile, name: str, value: Any, at: str) -> None:
    """Newest timestamp wins per trait: a late, older call never overwrites a newer one."""
    current = profile.trait_times.get(name)
    if current is None or at >= current:
        profile.traits[name] = value
        profile.trait_times[name] = at
        profile.changed = True


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)
