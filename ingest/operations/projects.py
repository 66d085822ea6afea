"""Projects: list, create, rotate the key with a grace period, revoke, set or clear the
webhook secret, set the allowed origins, set the acceptance rule (`accept`), set the
project's company domain exceptions (free-mail and work domains).

A public key is not a secret (it ships in every page that sends with it), so answers carry
it; a webhook secret is one, so no answer and no audit record ever carries it, only
whether the project has one. Every change is recorded in the audit log.

Receivers apply every change within KOALA_KEY_CACHE_SECONDS (their key cache reloads);
a new project's key works at once. Workers apply company domains within the same time
(workers/project_rules.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.acceptance import ACCEPT_ALL, ACCEPT_MODES
from ingest.companies import ascii_domain
from ingest.config import MAX_KEY_ROTATION_GRACE_SECONDS
from ingest.cors import InvalidOrigin, normalize_origins
from ingest.operations import paging
from ingest.operations.context import Ops
from ingest.operations.errors import Conflict, Invalid, NotFound
from ingest.operations.paging import Page
from ingest.store import projects
from ingest.store.projects import NAME_PATTERN, Project

MAX_SECRET_CHARS = 1000
MAX_COMPANY_DOMAINS = 1000  # per list: exceptions, not a list of every company
NAME_RULE = "a project name is 1-100 letters, digits, '.', '_' or '-' (not first)"
AcceptMode = Literal["all", "identified"]
ACCEPT_DESCRIPTION = (
    "Koala's acceptance rule: `all` takes every call; `identified` refuses track and"
    " identify calls carrying neither an email (properties or traits) nor a Koala"
    " `profile_id` (code `not_identified`). Page, screen, group and alias are always taken."
)


class ProjectInfo(BaseModel):
    id: int
    name: str
    public_key: str = Field(description="The Segment write key to give out.")
    previous_public_key: str | None = Field(
        description="The key before the last rotation, still taken until"
        " `previous_key_expires_at`; null when none is."
    )
    previous_key_expires_at: datetime | None
    has_webhook_secret: bool = Field(
        description="Whether webhook calls must be signed (`X-Signature`); the secret itself"
        " is never shown."
    )
    allowed_origins: list[str] | None = Field(
        description="Browser origins calls may come from; null: any."
    )
    accept: AcceptMode = Field(description=ACCEPT_DESCRIPTION)
    company_free_domains: list[str] = Field(
        description="Email domains that stand for no company in this project (besides the"
        " free-mail and disposable lists and KOALA_COMPANY_EXTRA_FREE_DOMAINS)."
    )
    company_work_domains: list[str] = Field(
        description="Email domains that always stand for a company in this project, even"
        " when a list names them."
    )
    created_at: datetime | None
    rate_limit: int | None = Field(
        default=None,
        description="Its own calls/s limit (429 over it); null: KOALA_PROJECT_RATE_LIMIT; 0: none.",
    )
    queue_limit: int | None = Field(
        default=None,
        description="Its own limit of calls waiting for the workers (429 over it); null:"
        " KOALA_PROJECT_QUEUE_LIMIT; 0: none.",
    )

    @classmethod
    def of(cls, project: Project) -> ProjectInfo:
        return cls(
            id=project.id,
            name=project.name,
            public_key=project.public_key,
            previous_public_key=project.previous_public_key,
            previous_key_expires_at=project.previous_key_expires_at,
            has_webhook_secret=bool(project.webhook_secret),
            allowed_origins=project.allowed_origins,
            accept=_mode(project.accept),
            company_free_domains=project.company_free_domains,
            company_work_domains=project.company_work_domains,
            created_at=project.created_at,
            rate_limit=project.rate_limit,
            queue_limit=project.queue_limit,
        )


class RotatedKey(BaseModel):
    name: str
    public_key: str = Field(description="The new key: give it to every sender.")
    previous_public_key: str | None = Field(
        description="The key replaced; null when it stopped at once (a grace of 0)."
    )
    previous_key_expires_at: datetime | None = Field(
        description="When the replaced key stops being taken (receivers refuse it within"
        " KOALA_KEY_CACHE_SECONDS of it at most)."
    )
    grace_seconds: int


class Revoked(BaseModel):
    name: str
    revoked_at: datetime


# Request bodies (the admin API's; the CLI passes the same values as arguments)


class NewProject(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100, description=NAME_RULE)
    webhook_secret: str | None = Field(
        default=None, min_length=1, max_length=MAX_SECRET_CHARS,
        description="Shared secret of Segment's webhook (`X-Signature`).",
    )  # fmt: skip
    allowed_origins: list[str] | None = Field(
        default=None, description="Browser origins calls may come from; null: any."
    )
    accept: AcceptMode = Field(default="all", description=ACCEPT_DESCRIPTION)


class KeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int | None = Field(
        default=None, ge=0, le=MAX_KEY_ROTATION_GRACE_SECONDS,
        description="How long the replaced key is still taken (null:"
        " KOALA_KEY_ROTATION_GRACE_SECONDS; 0: it stops at once).",
    )  # fmt: skip


class WebhookSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(
        min_length=1, max_length=MAX_SECRET_CHARS,
        description="The new secret; null clears it (webhook calls are then taken unsigned,"
        " and delete calls refused).",
    )  # fmt: skip


class AllowedOrigins(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_origins: list[str] | None = Field(
        description="`https://www.acme.com`, `https://*.acme.com` for subdomains; null: any;"
        " `[]`: no browser at all."
    )


class AcceptRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accept: AcceptMode = Field(description=ACCEPT_DESCRIPTION)


class CompanyDomains(BaseModel):
    model_config = ConfigDict(extra="forbid")

    free: list[str] = Field(
        max_length=MAX_COMPANY_DOMAINS,
        description="Email domains that stand for no company in this project (a regional"
        " ISP's mail; their subdomains too). Replaces the project's list.",
    )
    work: list[str] = Field(
        max_length=MAX_COMPANY_DOMAINS,
        description="Email domains that always stand for a company in this project, even when"
        " a free-mail or disposable list (or KOALA_COMPANY_EXTRA_FREE_DOMAINS) names them."
        " Replaces the project's list.",
    )


class LimitsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate_limit: int | None = Field(
        ge=0,
        le=1_000_000_000,
        description="Calls per second (all receivers together); 0: none; null:"
        " KOALA_PROJECT_RATE_LIMIT.",
    )
    queue_limit: int | None = Field(
        ge=0,
        le=1_000_000_000,
        description="Calls waiting for the workers; 0: none; null: KOALA_PROJECT_QUEUE_LIMIT.",
    )


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=500)


def list_projects(
    ops: Ops, limit: int = paging.DEFAULT_LIMIT, cursor: str | None = None
) -> Page[ProjectInfo]:
    """Active projects by id; an actor limited to some projects sees only those."""
    if not 1 <= limit <= paging.MAX_LIMIT:
        raise Invalid("invalid_limit", f"limit is 1 to {paging.MAX_LIMIT}")
    after = paging.decode("projects", cursor, 1)
    ids = None if ops.actor.projects is None else sorted(ops.actor.projects)
    rows = projects.page(ops.conn, int(after[0]) if after else None, limit + 1, ids)
    found = paging.page("projects", rows, limit, lambda p: [p.id])
    return Page[ProjectInfo](items=[ProjectInfo.of(p) for p in found.items], next=found.next)


def get(ops: Ops, name: str) -> ProjectInfo:
    return ProjectInfo.of(ops.project(name))


def create(
    ops: Ops,
    name: str,
    webhook_secret: str | None = None,
    allowed_origins: list[str] | None = None,
    accept: str = ACCEPT_ALL,
) -> ProjectInfo:
    """A new project and its key; only an operator of every project may create one.
    `accept`: "all" (the default) or "identified" (ingest/acceptance.py)."""
    ops.actor.check_acts(None)
    if not re.match(NAME_PATTERN, name):
        raise Invalid("invalid_name", NAME_RULE)
    _check_secret(webhook_secret)
    _check_accept(accept)
    origins = _origins(allowed_origins)
    with ops.conn.transaction():
        try:
            project = projects.create(ops.conn, name, webhook_secret, origins, accept)
        except projects.ProjectExists:
            raise Conflict("project_exists", f"a project named {name!r} already exists") from None
        ops.record(
            "project.create",
            project,
            {
                "webhook_secret": webhook_secret is not None,
                "allowed_origins": origins,
                "accept": accept,
            },
            1,
        )
    return ProjectInfo.of(project)


def rotate_key(ops: Ops, name: str, grace_seconds: int | None = None) -> RotatedKey:
    """A new key; the current one is still taken for `grace_seconds` (default
    KOALA_KEY_ROTATION_GRACE_SECONDS; 0: it stops at once). A previous key still in its
    grace from an earlier rotation stops at once."""
    ops.acting_on(name)
    grace = ops.settings.key_rotation_grace_seconds if grace_seconds is None else grace_seconds
    if not 0 <= grace <= MAX_KEY_ROTATION_GRACE_SECONDS:
        raise Invalid(
            "invalid_grace",
            f"the grace period is 0 to {MAX_KEY_ROTATION_GRACE_SECONDS} seconds (30 days)",
        )
    with ops.conn.transaction():
        rotated = projects.rotate_key(ops.conn, name, grace)
        if rotated is None:  # revoked since acting_on looked
            raise NotFound("unknown_project", f"no project named {name!r}")
        expires = rotated.previous_key_expires_at
        ops.record(
            "project.rotate_key",
            rotated,
            {
                "grace_seconds": grace,
                "previous_key_expires_at": expires.isoformat() if expires else None,
            },
            1,
        )
    return RotatedKey(
        name=rotated.name,
        public_key=rotated.public_key,
        previous_public_key=rotated.previous_public_key,
        previous_key_expires_at=expires,
        grace_seconds=grace,
    )


def revoke(ops: Ops, name: str) -> Revoked:
    """Refuse the project's keys (current and previous) from now on: receivers answer 401
    within KOALA_KEY_CACHE_SECONDS. Its stored data stays."""
    project = ops.acting_on(name)
    with ops.conn.transaction():
        at = projects.revoke(ops.conn, name)
        if at is None:
            raise NotFound("unknown_project", f"no project named {name!r}")
        ops.record("project.revoke", project, {}, 1)
    return Revoked(name=name, revoked_at=at)


def _change(
    ops: Ops,
    name: str,
    action: str,
    write: Callable[[], bool],
    described: Callable[[Project], dict[str, Any]],
) -> ProjectInfo:
    """One audited change of a live project: `write` it, and record what `described`
    says of it given the project as it was before, in one transaction."""
    with ops.conn.transaction():
        before = ops.project(name)
        if not write():
            raise NotFound("unknown_project", f"no project named {name!r}")
        project = ops.project(name)
        ops.record(action, project, described(before), 1)
    return ProjectInfo.of(project)


def set_webhook_secret(ops: Ops, name: str, secret: str | None) -> ProjectInfo:
    """Set the secret Segment's webhook signs with, or clear it (None)."""
    ops.acting_on(name)
    _check_secret(secret)
    with ops.conn.transaction():
        if not projects.set_webhook_secret(ops.conn, name, secret):
            raise NotFound("unknown_project", f"no project named {name!r}")
        project = ops.project(name)
        # whether it was set or cleared, never the secret
        ops.record("project.webhook_secret", project, {"set": secret is not None}, 1)
    return ProjectInfo.of(project)


def set_allowed_origins(ops: Ops, name: str, origins: list[str] | None) -> ProjectInfo:
    """The browser origins calls may come from (None: any); others are refused with
    `403 origin_not_allowed`. Calls without `Origin` are never refused by it."""
    ops.acting_on(name)
    wanted = _origins(origins)
    with ops.conn.transaction():
        if not projects.set_allowed_origins(ops.conn, name, wanted):
            raise NotFound("unknown_project", f"no project named {name!r}")
        project = ops.project(name)
        ops.record("project.allowed_origins", project, {"allowed_origins": wanted}, 1)
    return ProjectInfo.of(project)


def set_accept(ops: Ops, name: str, accept: str) -> ProjectInfo:
    """Koala's acceptance rule: "identified" refuses track and identify calls without an
    email or a profile_id (`not_identified`), "all" takes them. Receivers apply it within
    KOALA_KEY_CACHE_SECONDS, to calls received from then on."""
    ops.acting_on(name)
    _check_accept(accept)
    return _change(
        ops, name, "project.accept", lambda: projects.set_accept(ops.conn, name, accept),
        lambda before: {"accept": accept, "before": before.accept},
    )  # fmt: skip


def set_company_domains(ops: Ops, name: str, free: list[str], work: list[str]) -> ProjectInfo:
    """Replace the project's company domain exceptions. They apply to calls normalized from
    then on (workers reload them within KOALA_KEY_CACHE_SECONDS); stored events get them
    when reprocessed (`koala-ingest reprocess`). A domain is in one list at most."""
    ops.acting_on(name)
    free_domains, work_domains = _domains(free), _domains(work)
    both = sorted(set(free_domains) & set(work_domains))
    if both:
        raise Invalid(
            "invalid_domain", f"a domain is either free or work, not both: {', '.join(both)}"
        )
    return _change(
        ops, name, "project.company_domains",
        lambda: projects.set_company_domains(ops.conn, name, free_domains, work_domains),
        lambda before: {
            "free": free_domains,
            "work": work_domains,
            "before": {"free": before.company_free_domains, "work": before.company_work_domains},
        },
    )  # fmt: skip


def set_limits(ops: Ops, name: str, rate: int | None, queued: int | None) -> ProjectInfo:
    """The project's own limits (ingest/limits.py): calls per second, and calls waiting
    for the workers; None: the deployment's settings, 0: no limit. Receivers apply them
    within KOALA_KEY_CACHE_SECONDS."""
    ops.acting_on(name)
    for value in (rate, queued):
        if value is not None and not 0 <= value <= 1_000_000_000:
            raise Invalid("invalid_limit", "a limit is a whole number from 0 to 1000000000")
    return _change(
        ops, name, "project.limits", lambda: projects.set_limits(ops.conn, name, rate, queued),
        lambda before: {
            "rate_limit": rate,
            "queue_limit": queued,
            "before": {"rate_limit": before.rate_limit, "queue_limit": before.queue_limit},
        },
    )  # fmt: skip


def _domains(given: list[str]) -> list[str]:
    """Lower-case ASCII (punycode) domains, sorted, without repeats, as the deployment's
    KOALA_COMPANY_* settings are read (ingest/config.py)."""
    if len(given) > MAX_COMPANY_DOMAINS:
        raise Invalid("invalid_domain", f"at most {MAX_COMPANY_DOMAINS} domains per list")
    out = set()
    for value in given:
        domain = ascii_domain(value) if isinstance(value, str) else None
        if domain is None or "." not in domain:
            raise Invalid("invalid_domain", f"not a domain name: {str(value)[:100]!r}")
        out.add(domain)
    return sorted(out)


def _check_accept(accept: str) -> None:
    if accept not in ACCEPT_MODES:
        raise Invalid("invalid_accept", "accept is `all` or `identified`")


def _mode(accept: str) -> AcceptMode:
    return "identified" if accept == "identified" else "all"


def _origins(given: list[str] | None) -> list[str] | None:
    if given is None:
        return None
    try:
        return list(normalize_origins(given))
    except InvalidOrigin as error:
        raise Invalid("invalid_origin", str(error)) from None


def _check_secret(secret: str | None) -> None:
    if secret is not None and (not 0 < len(secret) <= MAX_SECRET_CHARS or "\x00" in secret):
        raise Invalid(
            "invalid_webhook_secret",
            f"a webhook secret is 1 to {MAX_SECRET_CHARS} characters, without NUL",
        )
