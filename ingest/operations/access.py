"""Who is calling the admin API: a Bearer token turned into an `Actor`.

`ADMIN_TOKEN` (the bootstrap token, from the environment) is an operator of every
project; tokens made with `koala-ingest tokens create` carry a role and optionally a
list of projects (ingest/operations/tokens.py).
"""

from __future__ import annotations

import hmac

import psycopg

from ingest.config import Settings
from ingest.operations.actor import ADMIN_TOKEN_ACTOR, Actor


def bearer(authorization: str) -> str | None:
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def authenticate(conn: psycopg.Connection, settings: Settings, authorization: str) -> Actor | None:
    given = bearer(authorization)
    if given is None:
        return None
    token = settings.admin_token
    if token is not None and hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        return ADMIN_TOKEN_ACTOR
    return None


def any_tokens(conn: psycopg.Connection) -> bool:
    """Whether any token besides ADMIN_TOKEN exists (the API is open to them then)."""
    return False
