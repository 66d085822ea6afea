"""API tokens: who may call the admin API and sign in to the console, with what role.

A token has a role, `viewer` (reads) or `operator` (reads and acts), and is either of
every project or limited to some (`ingest/operations/actor.py` enforces both). Tokens are
created, listed and revoked by an operator of every project (the CLI, `ADMIN_TOKEN`, or
such a token); a limited operator may not mint tokens, not even for its own projects.
`ADMIN_TOKEN` stays the bootstrap: an operator of every project, from the environment.

The token itself is shown once, when created, and only its SHA-256 is stored. A slow
password hash (bcrypt, scrypt, argon2) exists to make guessing a low-entropy password
from its hash expensive; a token is `kt_` and 32 random bytes (256 bits) from `secrets`,
so nothing is guessable and one SHA-256 is as safe, while keeping each authenticated
request cheap and letting the hash be looked up by a unique index (a salted KDF could
not be). A stolen copy of the table yields no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from ingest.config import Settings
from ingest.operations import paging
from ingest.operations.actor import ADMIN_TOKEN_ACTOR, ROLES, Actor, Role
from ingest.operations.context import Ops
from ingest.operations.errors import Conflict, Forbidden, Invalid, NotFound
from ingest.operations.paging import Page
from ingest.store import projects, tokens

PREFIX = "kt_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class TokenInfo(BaseModel):
    """A token as listed: never its secret, which is not kept."""

    id: int
    name: str
    role: Role
    projects: list[str] | None = Field(
        description="The projects it is limited to; null: every project."
    )
    created_at: datetime
    created_by: str = Field(description="Who created it (as in the audit log).")
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None


class CreatedToken(TokenInfo):
    token: str = Field(description="The secret, shown this once: only its hash is stored.")


class CreateRequest(BaseModel):
    """A new token (the body of the API's create)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME.pattern, description="1-100 letters, digits, '.', '_', '-'.")
    role: Role
    projects: list[str] | None = Field(
        default=None, min_length=1, description="Limit it to these projects; null: every one."
    )


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_revoked: bool = False
    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def hash_token(token: str) -> bytes:
    """What is stored and looked up: SHA-256 of the token (see the module's docstring)."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def create(ops: Ops, name: str, role: str, project_names: list[str] | None) -> CreatedToken:
    """A new token; the answer holds its secret, which cannot be read again."""
    ops.actor.check_acts(None)
    if role not in ROLES:
        raise Invalid("invalid_role", "a role is one of " + ", ".join(ROLES))
    if not NAME.fullmatch(name):
        raise Invalid("invalid_name", "a token name is 1-100 letters, digits, '.', '_' or '-'")
    if project_names is not None and not project_names:
        raise Invalid("invalid_projects", "name at least one project, or none for every project")
    project_ids = None
    if project_names is not None:
        project_ids = []
        for project_name in dict.fromkeys(project_names):
            found = projects.get_by_name(ops.conn, project_name)
            if found is None:
                raise NotFound("unknown_project", f"no project named {project_name!r}")
            project_ids.append(found.id)
    secret = new_token()
    try:
        with ops.conn.transaction():
            row = tokens.create(
                ops.conn, name, role, project_ids, hash_token(secret), ops.actor.name
            )
            ops.record("token.create", None, _described(row), 1)
    except tokens.TokenExists:
        raise Conflict("token_exists", f"a token named {name!r} exists already") from None
    return CreatedToken.model_validate({**row, "token": secret})


def list_tokens(
    ops: Ops, limit: int, cursor: str | None, include_revoked: bool = False
) -> Page[TokenInfo]:
    """Live tokens (and revoked ones with `include_revoked`), oldest first. Only an actor
    of every project (viewer or operator) sees them: they name projects."""
    if not ops.actor.everywhere:
        raise Forbidden("forbidden", f"{ops.actor.name} is limited to some projects")
    if not 1 <= limit <= paging.MAX_LIMIT:
        raise Invalid("invalid_limit", f"limit is 1 to {paging.MAX_LIMIT}")
    after = paging.decode("tokens", cursor, 1)
    rows = tokens.page(ops.conn, int(after[0]) if after else None, limit + 1, include_revoked)
    found = paging.page("tokens", rows, limit, lambda r: [r["id"]])
    return Page[TokenInfo](
        items=[TokenInfo.model_validate(r) for r in found.items], next=found.next
    )


def revoke(ops: Ops, name: str) -> TokenInfo:
    """Revoke the live token of this name: refused from its next request on."""
    ops.actor.check_acts(None)
    with ops.conn.transaction():
        row = tokens.revoke(ops.conn, name)
        if row is None:
            raise NotFound("unknown_token", f"no live token named {name!r}")
        ops.record("token.revoke", None, _described(row), 1)
    return TokenInfo.model_validate(row)


def _described(row: dict[str, object]) -> dict[str, object]:
    """What the audit log says of a token: never its secret or hash."""
    return {"name": row["name"], "role": row["role"], "projects": row["projects"]}


def authenticate(
    conn: psycopg.Connection, settings: Settings, authorization: str | None
) -> Actor | None:
    """The actor an `Authorization` header value stands for, or None (no header, another
    scheme, an unknown or revoked token).

    `Bearer <ADMIN_TOKEN>` is the bootstrap operator of every project (compared in
    constant time); `Bearer kt_...` is looked up by its hash."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    admin = settings.admin_token
    if admin is not None and hmac.compare_digest(given.encode(), admin.get_secret_value().encode()):
        return ADMIN_TOKEN_ACTOR
    if not given.startswith(PREFIX):
        return None
    return actor_of(find_by_hash(conn, hash_token(given)))


def find_by_hash(conn: psycopg.Connection, token_hash: bytes) -> dict[str, Any] | None:
    """The live token with this hash, marked used (at most once a minute)."""
    found = tokens.find_active(conn, token_hash)
    if found is not None:
        tokens.touch(conn, found["id"])
    return found


def actor_of(found: dict[str, Any] | None) -> Actor | None:
    if found is None:
        return None
    limited = found["project_ids"]
    return Actor(
        f"token:{found['name']}",
        found["role"],
        None if limited is None else frozenset(int(i) for i in limited),
    )
