"""Profiles: look one up by any identifier, read it whole, page its events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.identifiers import clean_email, clean_identifier
from ingest.operations import audiences as engage
from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid, NotFound
from ingest.operations.paging import Page
from ingest.store import accounts, events, identities, merges, profiles
from ingest.store.projects import Project

LookupKind = Literal["email", "profile_id", "user_id", "anonymous_id"]
LOOKUP_KINDS: tuple[LookupKind, ...] = ("email", "profile_id", "user_id", "anonymous_id")


class Account(BaseModel):
    id: int
    group_id: str | None
    domain: str | None
    name: str | None


class Profile(BaseModel):
    id: int
    emails: list[str]
    profile_ids: list[str]
    user_ids: list[str]
    anonymous_ids: list[str]
    traits: dict[str, Any]
    accounts: list[Account]
    event_count: int
    first_seen: datetime | None
    last_seen: datetime | None


class Profiles(BaseModel):
    profiles: list[Profile]


MAX_MERGES = 500


class Merge(BaseModel):
    from_profile: int = Field(description="The profile merged away (or kept apart).")
    into_profile: int
    reason: str = Field(description="What linked them: the identifier the call shared.")
    message_id: str | None = Field(description="The call that merged them (or would have).")
    refused: bool = Field(
        description="The guard kept them apart: a profile never holds two emails."
    )
    at: datetime


class ProfileDetail(BaseModel):
    asked: int = Field(description="The id asked for.")
    merged_into: int | None = Field(
        description="When the id asked for was merged away: the profile it now is."
    )
    profile: Profile
    absorbed: list[int] = Field(description="Profiles merged into this one.")
    merges: list[Merge] = Field(
        description="Merges naming this profile or one it absorbed, newest first."
    )
    refused_merges: list[Merge] = Field(
        description="Merges the guard refused, naming this profile or one it absorbed."
    )
    merges_truncated: bool = Field(
        description=f"More than {MAX_MERGES} merge records: the newest are shown."
    )
    audiences: list[engage.Membership] = Field(
        description="Engage audiences the profile was ever in, each with its dated"
        " transitions (entered, exited), oldest first; `member` is the state now."
    )
    computed_traits: list[engage.TraitSource] = Field(
        description="Traits Engage computed for the profile: the computation and space"
        " each comes from, and its latest call."
    )


class Event(BaseModel):
    message_id: str
    type: str
    event: str | None
    name: str | None
    properties: dict[str, Any] | None
    timestamp: datetime
    received_at: datetime | None


class ProfileEvents(Page[Event]):
    profile_id: int


class Lookup(BaseModel):
    """Exactly one identifier to look a profile up by."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=1000)
    profile_id: str | None = Field(default=None, max_length=1000)
    user_id: str | None = Field(default=None, max_length=1000)
    anonymous_id: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def exactly_one(self) -> Lookup:
        if len(self.model_dump(exclude_none=True)) != 1:
            raise ValueError("give exactly one of " + ", ".join(LOOKUP_KINDS))
        return self

    @property
    def given(self) -> tuple[str, str]:
        [(kind, value)] = self.model_dump(exclude_none=True).items()
        return kind, value


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def lookup(ops: Ops, name: str, query: Lookup) -> Profiles:
    return find(ops, name, *query.given)


def find(ops: Ops, name: str, kind: str, value: str) -> Profiles:
    """Profiles holding an identifier; an email is normalized as the workers do."""
    project = ops.project(name)
    return Profiles(profiles=find_in(ops, project, kind, value))


def find_in(ops: Ops, project: Project, kind: str, value: str) -> list[Profile]:
    if kind not in LOOKUP_KINDS:
        raise Invalid("invalid_lookup", "look up by one of " + ", ".join(LOOKUP_KINDS))
    rules = ops.rules
    cleaned = (
        clean_email(value, rules.blocked, rules.strip_plus_tags)
        if kind == "email"
        else clean_identifier(value, rules.blocked)
    )
    if cleaned is None:
        return []
    return describe(ops, project, identities.find_profiles(ops.conn, project.id, kind, cleaned))


def describe(ops: Ops, project: Project, ids: list[int]) -> list[Profile]:
    rows = profiles.get(ops.conn, project.id, ids)
    keys = identities.of_profiles(ops.conn, [r["id"] for r in rows])
    links = accounts.of_profiles(ops.conn, [r["id"] for r in rows])
    out = []
    for row in rows:
        held = keys.get(row["id"], [])
        out.append(
            Profile(
                id=row["id"],
                emails=[v for k, v in held if k == "email"],
                profile_ids=[v for k, v in held if k == "profile_id"],
                user_ids=[v for k, v in held if k == "user_id"],
                anonymous_ids=[v for k, v in held if k == "anonymous_id"],
                traits=row["traits"],
                accounts=[Account(**a) for a in links.get(row["id"], [])],
                event_count=row["event_count"],
                first_seen=row["first_seen"],
                last_seen=row["last_seen"],
            )
        )
    return out


def detail(ops: Ops, name: str, profile_id: int) -> ProfileDetail:
    """One profile whole: identifiers, traits, accounts, what merged into it and what the
    guard refused; a merged-away id answers for the profile it was merged into."""
    project = ops.project(name)
    survivor = profiles.resolve_merged(ops.conn, project.id, profile_id)
    found = describe(ops, project, [survivor]) if survivor is not None else []
    if survivor is None or not found:
        raise NotFound("unknown_profile", f"no profile {profile_id} in {project.name}")
    absorbed = profiles.absorbed(ops.conn, project.id, survivor)
    rows = merges.of_profiles(ops.conn, project.id, [survivor, *absorbed], MAX_MERGES + 1)
    records = [
        Merge(
            from_profile=r["from_profile"],
            into_profile=r["into_profile"],
            reason=r["reason"],
            message_id=r["message_id"],
            refused=r["refused"],
            at=r["created_at"],
        )
        for r in rows[:MAX_MERGES]
    ]
    memberships, computed = engage.of_profile(ops, survivor)
    return ProfileDetail(
        asked=profile_id,
        merged_into=survivor if survivor != profile_id else None,
        profile=found[0],
        absorbed=absorbed,
        merges=[m for m in records if not m.refused],
        refused_merges=[m for m in records if m.refused],
        merges_truncated=len(rows) > MAX_MERGES,
        audiences=memberships,
        computed_traits=computed,
    )


def events_of(
    ops: Ops, name: str, profile_id: int, limit: int, cursor: str | None
) -> ProfileEvents:
    """A page of a profile's events, newest first (a merged profile answers for the one
    it was merged into)."""
    project = ops.project(name)
    survivor = profiles.resolve_merged(ops.conn, project.id, profile_id)
    if survivor is None:
        raise NotFound("unknown_profile", f"no profile {profile_id} in {project.name}")
    after = paging.decode("events", cursor, 2)
    rows = events.of_profile(
        ops.conn,
        survivor,
        limit + 1,
        (datetime.fromisoformat(after[0]), int(after[1])) if after else None,
    )
    found = paging.page("events", rows, limit, lambda r: [r["timestamp"].isoformat(), r["id"]])
    return ProfileEvents(
        profile_id=survivor,
        items=[Event.model_validate(r) for r in found.items],
        next=found.next,
    )
