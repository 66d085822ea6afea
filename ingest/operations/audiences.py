"""Engage audiences: a project's audiences, the members of one, and a profile's history
(ingest/audiences.py tells what an Engage call is; ingest/store/audiences.py keeps them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.audiences import MAX_KEY
from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Invalid
from ingest.operations.paging import Page
from ingest.store import audiences


class Audience(BaseModel):
    key: str = Field(description="Engage's computation_key: the trait naming the audience.")
    members: int = Field(description="Profiles whose latest call says they are in it.")
    profiles: int = Field(description="Profiles it ever had a call for (in it or not).")
    last_change: datetime = Field(description="The newest call's timestamp.")
    computation_id: str | None
    space_id: str | None


class Member(BaseModel):
    profile_id: int
    member: bool = Field(description="In the audience now (its latest call entered).")
    since: datetime | None = Field(
        description="When the current stay began: the first entering after the last exit."
    )
    changed_at: datetime = Field(description="The timestamp of its latest call.")


class Members(Page[Member]):
    key: str


class Transition(BaseModel):
    entered: bool = Field(description="True: entered the audience; false: exited it.")
    at: datetime = Field(description="The Engage call's timestamp.")
    message_id: str
    computation_id: str | None
    space_id: str | None


class Membership(BaseModel):
    key: str
    member: bool = Field(description="In the audience now.")
    computation_id: str | None
    space_id: str | None
    namespace: str | None
    transitions: list[Transition] = Field(
        description="Every change of membership (a repeated state is not one), oldest first."
    )


class TraitSource(BaseModel):
    key: str = Field(description="The computed trait (its value is in the profile's traits).")
    value: Any
    at: datetime
    message_id: str
    computation_id: str | None
    space_id: str | None
    namespace: str | None


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=1500)


class MembersQuery(Query):
    state: Literal["entered", "exited", "all"] = Field(
        default="entered",
        description="`entered`: members now; `exited`: profiles that left; `all`: both.",
    )


def find(ops: Ops, name: str, query: Query) -> Page[Audience]:
    """A project's Engage audiences by key, with how many members each has now."""
    project = ops.project(name)
    after = paging.decode("audiences", query.cursor, 1)
    rows = audiences.summaries(
        ops.conn, project.id, str(after[0]) if after else None, query.limit + 1
    )
    found = paging.page("audiences", rows, query.limit, lambda r: [r["key"]])
    return Page[Audience](items=[Audience.model_validate(r) for r in found.items], next=found.next)


def members(ops: Ops, name: str, key: str, query: MembersQuery) -> Members:
    """The profiles of one audience by their latest call, by profile id. An audience
    nobody has a call for is an empty list (Engage may not have sent one yet)."""
    project = ops.project(name)
    after = paging.decode("audience_members", query.cursor, 2)
    if after is not None and after[0] != f"{key}:{query.state}":
        raise Invalid("invalid_cursor", "the cursor is not one this list gave")
    rows = audiences.members(
        ops.conn,
        project.id,
        key[:MAX_KEY],
        query.state,
        int(after[1]) if after else None,
        query.limit + 1,
    )
    found = paging.page(
        "audience_members",
        rows,
        query.limit,
        lambda r: [f"{key}:{query.state}", r["profile_id"]],
    )
    return Members(key=key, items=[Member.model_validate(r) for r in found.items], next=found.next)


def of_profile(ops: Ops, profile_id: int) -> tuple[list[Membership], list[TraitSource]]:
    """A (surviving, project-checked) profile's audiences with their transitions, and
    where its computed traits come from."""
    by_key: dict[str, Membership] = {}
    for row in audiences.transitions(ops.conn, profile_id):
        found = by_key.setdefault(
            row["key"],
            Membership(
                key=row["key"],
                member=False,
                computation_id=None,
                space_id=None,
                namespace=None,
                transitions=[],
            ),
        )
        found.transitions.append(Transition.model_validate(row))
        found.member = row["entered"]  # rows come oldest first: the last one stands
        found.computation_id = row["computation_id"]
        found.space_id = row["space_id"]
        found.namespace = row["namespace"]
    sources = [TraitSource.model_validate(r) for r in audiences.trait_sources(ops.conn, profile_id)]
    return list(by_key.values()), sources
