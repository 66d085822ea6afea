"""The admin API's one route table: every endpoint, its models, the operation it calls.

Reads need a `viewer` (or better) of the project, actions an `operator`: the operations
check it (ingest/operations/actor.py), so the CLI and the console obey the same rules.
"""

from __future__ import annotations

from typing import Any

from ingest.api.endpoint import Endpoint
from ingest.operations import (
    audiences,
    audit,
    breaker,
    companies,
    dead_letters,
    debugger,
    deletions,
    jobs,
    overview,
    profiles,
    projects,
    rejections,
    stats,
    tokens,
)
from ingest.operations.paging import Page

P = "/admin/projects/{name}"
LETTER = P + "/dead-letters/{id:int}"


def _named(run: Any) -> Any:
    """An operation of the project named in the path, with the query or body model."""
    return lambda ops, path, query, body: run(ops, path["name"], query if body is None else body)


def _discard_one(ops: Any, path: dict[str, Any], query: Any, body: Any) -> Any:
    selection = dead_letters.Selection(ids=[path["id"]])
    return dead_letters.discard(ops, path["name"], selection)


ADMIN: list[Endpoint] = [
    Endpoint(
        "GET", "/admin/overview",
        "Every project this token sees, reconciled, with calls per minute over the last hour;"
        " queue depth and the age of its oldest call, the breaker, the workers alive.",
        overview.Overview, lambda ops, path, q, b: overview.overview(ops), tag="overview",
        errors=(401,),
    ),
    Endpoint(
        "GET", "/admin/projects", "Projects this token may see, oldest first (never a secret).",
        Page[projects.ProjectInfo],
        lambda ops, path, q, b: projects.list_projects(ops, q.limit, q.cursor),
        query=projects.Query, tag="projects", errors=(400, 401),
    ),
    Endpoint(
        "POST", "/admin/projects",
        "Create a project; the answer holds its public key (the Segment write key).",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.create(
            ops, b.name, b.webhook_secret, b.allowed_origins, b.accept
        ),
        body=projects.NewProject, status=201, acts=True, tag="projects",
        errors=(400, 401, 403, 409),
    ),
    Endpoint(
        "GET", P, "One project.", projects.ProjectInfo,
        lambda ops, path, q, b: projects.get(ops, path["name"]), tag="projects",
    ),
    Endpoint(
        "DELETE", P, "Revoke a project: its keys are refused within KOALA_KEY_CACHE_SECONDS.",
        projects.Revoked, lambda ops, path, q, b: projects.revoke(ops, path["name"]),
        acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "POST", P + "/rotate-key",
        "A new public key; the old one keeps working for the grace period"
        " (KOALA_KEY_ROTATION_GRACE_SECONDS unless given), then is refused.",
        projects.RotatedKey,
        lambda ops, path, q, b: projects.rotate_key(ops, path["name"], b.grace_seconds),
        body=projects.KeyRotation, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PUT", P + "/webhook-secret",
        "Set (a string) or clear (null) the secret of Segment's webhook (X-Signature).",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.set_webhook_secret(ops, path["name"], b.secret),
        body=projects.WebhookSecret, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PUT", P + "/allowed-origins",
        "Replace the origins a project's browsers may send from; null takes any origin.",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.set_allowed_origins(ops, path["name"], b.allowed_origins),
        body=projects.AllowedOrigins, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PUT", P + "/accept",
        "Koala's acceptance rule: `identified` refuses track and identify calls without an"
        " email or a Koala profile_id (`not_identified`); `all` takes them.",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.set_accept(ops, path["name"], b.accept),
        body=projects.AcceptRule, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PUT", P + "/company-domains",
        "Replace the project's company exceptions: `free` email domains stand for no company"
        " in it, `work` ones always for one. Workers apply them within"
        " KOALA_KEY_CACHE_SECONDS; reprocessing applies them to stored events.",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.set_company_domains(ops, path["name"], b.free, b.work),
        body=projects.CompanyDomains, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "PUT", P + "/limits",
        "The project's own limits: calls per second and calls waiting for the workers; over"
        " them its requests are answered 429 `rate_limited` + Retry-After. 0: none; null: the"
        " deployment's KOALA_PROJECT_RATE_LIMIT / KOALA_PROJECT_QUEUE_LIMIT.",
        projects.ProjectInfo,
        lambda ops, path, q, b: projects.set_limits(
            ops, path["name"], b.rate_limit, b.queue_limit
        ),
        body=projects.LimitsBody, acts=True, tag="projects", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "GET", P + "/stats",
        "Counts of a project: received = stored + duplicates + rejected + dead_lettered"
        " + in_flight.",
        stats.Stats,
        lambda ops, path, q, b: stats.stats(ops, path["name"]),
        tag="stats",
    ),
    Endpoint(
        "GET", P + "/profiles", "Find visitor profiles by one identifier.",
        profiles.Profiles, _named(profiles.lookup), query=profiles.Lookup, tag="profiles",
    ),
    Endpoint(
        "GET", P + "/profiles/{profile_id:int}",
        "One profile whole: identifiers, traits, accounts, the profiles merged into it and"
        " the merges the guard refused (a merged-away id answers for its survivor).",
        profiles.ProfileDetail,
        lambda ops, path, q, b: profiles.detail(ops, path["name"], path["profile_id"]),
        tag="profiles", not_found="unknown_profile",
    ),
    Endpoint(
        "GET", P + "/profiles/{profile_id:int}/events",
        "A profile's events, newest first (a merged profile answers for its survivor).",
        profiles.ProfileEvents,
        lambda ops, path, q, b: profiles.events_of(
            ops, path["name"], path["profile_id"], q.limit, q.cursor
        ),
        query=profiles.EventsQuery, tag="profiles", not_found="unknown_profile",
    ),
    Endpoint(
        "GET", P + "/audiences",
        "Engage audiences of a project by key: members now (latest call entered), profiles"
        " ever in it, the newest call.",
        Page[audiences.Audience], _named(audiences.find), query=audiences.Query,
        tag="audiences",
    ),
    Endpoint(
        "GET", P + "/audiences/{key}/members",
        "Profiles of one Engage audience by their latest call (`state`: entered, the"
        " members now; exited; all), by profile id, with when the current stay began.",
        audiences.Members,
        lambda ops, path, q, b: audiences.members(ops, path["name"], path["key"], q),
        query=audiences.MembersQuery, tag="audiences",
    ),
    Endpoint(
        "GET", P + "/companies",
        "Companies active in a window of UTC days (default: the last 7), ranked by their"
        " visitors' events (`rank=activity`) or by one intent signal (`rank=signal:NAME`),"
        " with active and identified visitors, events, page views and signals.",
        companies.Companies, _named(companies.ranked), query=companies.Query,
        tag="companies",
    ),
    Endpoint(
        "GET", P + "/companies/{company_id:int}",
        "One company in a window of UTC days: totals, each day (visitors, identified,"
        " events, page views, signals, most viewed paths), its visitors and recent page"
        " views (a merged-away company answers for its survivor).",
        companies.CompanyDetail,
        lambda ops, path, q, b: companies.detail(ops, path["name"], path["company_id"], q),
        query=companies.Window, tag="companies", not_found="unknown_company",
    ),
    Endpoint(
        "GET", P + "/debugger",
        "The live debugger: a project's most recent calls, oldest first, each with its"
        " outcome (stored, duplicate, rejected with its code, dead letter with its reason)"
        " and payload; `after` a call, only those that followed it.",
        debugger.Recent, _named(debugger.recent), query=debugger.Query, tag="debugger",
    ),
    Endpoint(
        "GET", P + "/rejections", "Calls refused for their content, newest first.",
        Page[rejections.Rejection], _named(rejections.find), query=rejections.Query,
        tag="rejections",
    ),
    Endpoint(
        "GET", P + "/deletions", "Delete calls carried out, newest first.",
        Page[deletions.Deletion], _named(deletions.find), query=deletions.Query,
        tag="deletions",
    ),
    Endpoint(
        "GET", P + "/suppressions",
        "Deletions suppressing calls now (KOALA_SUPPRESS_DAYS after each): calls naming"
        " their identifiers are refused as `suppressed`. Newest first.",
        Page[deletions.Suppression], _named(deletions.list_suppressions),
        query=deletions.Query, tag="deletions",
    ),
    Endpoint(
        "POST", P + "/suppressions/{id:int}/lift",
        "Lift a deletion's suppression: calls naming its identifiers are taken again.",
        deletions.Lifted,
        lambda ops, path, q, b: deletions.lift(ops, path["name"], path["id"]),
        acts=True, tag="deletions", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "GET", P + "/dead-letters",
        "Dead letters matching a filter, oldest first, with counts by reason and stage.",
        dead_letters.DeadLetterPage, _named(dead_letters.find), query=dead_letters.Query,
        tag="dead letters",
    ),
    Endpoint(
        "POST", P + "/dead-letters/replay",
        "Replay pending dead letters: by ids, by a filter, or all (explicitly). A dry run"
        " answers what would be replayed; a corrected payload goes with one id.",
        dead_letters.ReplayOutcome, _named(dead_letters.replay), body=dead_letters.ReplayRequest,
        acts=True, tag="dead letters", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "POST", P + "/dead-letters/discard",
        "Discard pending dead letters (they stay visible as discarded).",
        dead_letters.Changed, _named(dead_letters.discard), body=dead_letters.Selection,
        acts=True, tag="dead letters", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "POST", P + "/dead-letters/reset",
        "Letters stuck in `replaying` (their replay message lost) back to `pending`.",
        dead_letters.Changed, _named(dead_letters.reset), body=dead_letters.ResetRequest,
        acts=True, tag="dead letters", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "GET", LETTER, "One dead letter: payload, error, traceback, attempts.",
        dead_letters.DeadLetterDetail,
        lambda ops, path, q, b: dead_letters.get(ops, path["name"], path["id"]),
        tag="dead letters", not_found="unknown_dead_letter",
    ),
    Endpoint(
        "DELETE", LETTER, "Discard one pending dead letter.",
        dead_letters.Changed, _discard_one, acts=True, tag="dead letters",
        not_found="unknown_dead_letter", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "POST", P + "/reprocess",
        "Reprocess a project's stored events in a time range with today's rules, on the"
        " workers (an unfinished run of the same range resumes). A dry run counts the"
        " events.",
        jobs.Started,
        lambda ops, path, q, body: jobs.start_reprocess(ops, path["name"], body, "api"),
        body=jobs.ReprocessRequest, status=202, acts=True, tag="jobs",
        errors=(400, 401, 403, 404, 409),
    ),
    Endpoint(
        "GET", "/admin/jobs", "Job runs (reprocessing, scheduled jobs), newest first.",
        Page[jobs.Job], lambda ops, path, q, b: jobs.find(ops, q), query=jobs.Query, tag="jobs",
    ),
    Endpoint(
        "GET", "/admin/jobs/{id:int}", "One job run: parameters, progress, counts, errors.",
        jobs.Job, lambda ops, path, q, b: jobs.get(ops, path["id"]), tag="jobs",
        not_found="unknown_job",
    ),
    Endpoint(
        "POST", "/admin/jobs/{id:int}/cancel",
        "Cancel a job: at once if it is not running, at its next step if it is.",
        jobs.Cancelled, lambda ops, path, q, b: jobs.cancel(ops, path["id"]), acts=True,
        tag="jobs", not_found="unknown_job", errors=(400, 401, 403, 404),
    ),
    Endpoint(
        "GET", "/admin/breaker", "The dead-letter circuit breaker: open, and why.",
        breaker.BreakerState, lambda ops, path, q, b: breaker.state(ops), tag="breaker",
        errors=(401,),
    ),
    Endpoint(
        "POST", "/admin/breaker/reset", "Close the breaker now (after fixing the cause).",
        breaker.BreakerState, lambda ops, path, q, b: breaker.reset(ops), acts=True,
        tag="breaker", errors=(401, 403),
    ),
    Endpoint(
        "GET", "/admin/audit",
        "The audit log, newest first: every action that changed something, who, when,"
        " what selection, how many rows.",
        Page[audit.AuditEntry],
        lambda ops, path, q, b: audit.list_entries(ops, q.limit, q.cursor, q.project, q.action),
        query=audit.Query, tag="audit",
    ),
    Endpoint(
        "GET", "/admin/tokens", "API tokens (never their secret), oldest first.",
        Page[tokens.TokenInfo],
        lambda ops, path, q, b: tokens.list_tokens(ops, q.limit, q.cursor, q.include_revoked),
        query=tokens.ListQuery, tag="tokens", errors=(400, 401, 403),
    ),
    Endpoint(
        "POST", "/admin/tokens",
        "Create a token with a role (viewer or operator), optionally limited to projects;"
        " the answer holds the secret, shown this once.",
        tokens.CreatedToken,
        lambda ops, path, q, b: tokens.create(ops, b.name, b.role, b.projects),
        body=tokens.CreateRequest, status=201, acts=True, tag="tokens",
        errors=(400, 401, 403, 404, 409),
    ),
    Endpoint(
        "DELETE", "/admin/tokens/{token_name}", "Revoke a token: refused from its next request.",
        tokens.TokenInfo, lambda ops, path, q, b: tokens.revoke(ops, path["token_name"]),
        acts=True, tag="tokens", not_found="unknown_token", errors=(400, 401, 403, 404),
    ),
]  # fmt: skip
