"""Console sessions: a token exchanged once for a session cookie.

The token is typed once into the sign-in form (never in a URL), checked like an API
token, and never stored: the session keeps its SHA-256, and every request re-checks it,
so revoking the token signs its sessions out. The cookie holds a random secret whose
SHA-256 is the session's key; each session has its own CSRF token, required on every form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg

from ingest.config import Settings
from ingest.operations import tokens
from ingest.operations.actor import ADMIN_TOKEN_ACTOR, Actor
from ingest.store import audit, console_sessions

SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Session:
    actor: Actor
    csrf: str


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def actor_for_token_hash(
    conn: psycopg.Connection, settings: Settings, token_hash: bytes
) -> Actor | None:
    admin = settings.admin_token
    if admin is not None and hmac.compare_digest(token_hash, _hash(admin.get_secret_value())):
        return ADMIN_TOKEN_ACTOR
    return tokens.actor_of(tokens.find_by_hash(conn, token_hash))


def sign_in(conn: psycopg.Connection, settings: Settings, token: str) -> str | None:
    """The session secret for the cookie, or None for a wrong token."""
    token = token.strip()
    actor = tokens.authenticate(conn, settings, f"Bearer {token}") if token else None
    if actor is None:
        return None
    secret = secrets.token_urlsafe(32)
    with conn.transaction():
        console_sessions.create(conn, _hash(secret), _hash(token), secrets.token_urlsafe(32),
                                actor.name, SESSION_SECONDS)  # fmt: skip
        audit.record(conn, actor.name, "console.sign_in", None, {}, None)
    return secret


def resume(conn: psycopg.Connection, settings: Settings, secret: str | None) -> Session | None:
    if not secret:
        return None
    row = console_sessions.find_live(conn, _hash(secret))
    if row is None:
        return None
    actor = actor_for_token_hash(conn, settings, bytes(row["token_hash"]))
    if actor is None:  # the token was revoked (or ADMIN_TOKEN changed)
        console_sessions.delete(conn, _hash(secret))
        return None
    return Session(actor, str(row["csrf"]))


def sign_out(conn: psycopg.Connection, secret: str | None) -> None:
    if secret:
        console_sessions.delete(conn, _hash(secret))
