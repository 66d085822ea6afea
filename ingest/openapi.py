"""`GET /openapi.json`: every endpoint, its body and its answers, for a new user.

The body shapes are pydantic models used for documentation only: the hot path checks
calls with the hand-written rules in `ingest.wire` (one pass, per-item reasons), and
tests/test_openapi.py checks the two agree on the examples.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ingest.jobkinds import NAMES
from ingest.wire import SHORT_PATHS


class Call(BaseModel):
    """A Segment call (track, identify, page, screen, group, alias)."""

    # a call without userId and anonymousId is refused (`missing_identity`): said here,
    # generated requests (tests/test_fuzz_api.py) reach the workers, not only the refusals
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}]},
    )

    type: Literal["track", "identify", "page", "screen", "group", "alias"] | None = Field(
        None, description="Required in a batch; set from the path on /v1/{type}."
    )
    messageId: str | None = Field(None, max_length=100, description="Assigned if missing.")
    userId: str | None = Field(None, description="userId or anonymousId is required.")
    anonymousId: str | None = None
    event: str | None = Field(None, description="Required for track.")
    name: str | None = Field(None, description="Page or screen name.")
    groupId: str | None = Field(None, description="Required for group.")
    previousId: str | None = Field(None, description="Required for alias (with userId).")
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: str | None = Field(None, description="ISO-8601; corrected for clock skew.")
    sentAt: str | None = None
    writeKey: str | None = Field(None, description="Auth when no Basic header is sent.")


class Batch(BaseModel):
    model_config = ConfigDict(extra="allow")

    batch: list[Call] = Field(description="At most KOALA_MAX_BATCH_CALLS calls (2,500).")
    writeKey: str | None = None
    sentAt: str | None = None
    context: dict[str, Any] | None = Field(None, description="Merged into every call.")
    integrations: dict[str, Any] | None = Field(None, description="Merged into every call.")


class KoalaItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str | None = None
    event: str | None = None
    email: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    sent_at: str | None = None
    device_ip: str | None = None
    message_id: str | None = Field(None, description="The idempotency key.")


class KoalaBatch(BaseModel):
    """Koala's server-side format: items of one person; `profile_id` or `email` required."""

    model_config = ConfigDict(extra="allow")

    profile_id: str | None = Field(None, description="Koala's visitor id (the ko_id cookie).")
    email: str | None = None
    traits: dict[str, Any] | None = None
    ip: str | None = None
    events: list[KoalaItem] = []
    identifies: list[KoalaItem] = []
    page_views: list[KoalaItem] = []


class Rejected(BaseModel):
    index: int | None
    code: str
    message: str


class Success(BaseModel):
    success: Literal[True] = True
    rejected: list[Rejected] | None = Field(None, description="Items refused, by index.")


class KoalaSuccess(BaseModel):
    status: Literal["success"] = "success"
    rejected: list[Rejected] | None = None


class Error(BaseModel):
    code: str
    message: str


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (Call, Batch, KoalaBatch, Success, KoalaSuccess, Error):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


ERRORS = {
    "400": _json("Error", "Invalid JSON, envelope, or (single call) an invalid call."),
    "401": _json("Error", "Unknown or missing key; bad webhook signature."),
    "403": _json(
        "Error",
        "`origin_not_allowed`: the request's `Origin` is not among the project's allowed"
        " origins (kept as a rejection).",
    ),
    "413": _json("Error", "Over the call, request or batch limit (after decompression)."),
    "429": _json("Error", "Queue over its ceiling: retry after `Retry-After` seconds."),
    "503": _json(
        "Error",
        "Queue unavailable, or (with KOALA_REDIS_REPLICA_ACKS) the calls not yet on enough"
        " replicas: retry after `Retry-After` seconds.",
    ),
}
BASIC: list[dict[str, list[str]]] = [{"writeKey": []}]
KEY_PARAM = {"name": "public_key", "in": "path", "required": True, "schema": {"type": "string"}}


def _post(
    summary: str, body: str, ok: str, security: bool = True, params: list[Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref(body)},
                "text/plain": {"schema": _ref(body)},
            },
        },
        "responses": {"200": _json(ok, "Every accepted call is in the queue."), **ERRORS},
    }
    if security:
        op["security"] = BASIC
    if params:
        op["parameters"] = params
    return {"post": op}


def build() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for call_type in ("track", "identify", "page", "screen", "group", "alias"):
        paths[f"/v1/{call_type}"] = _post(
            f"One {call_type} call (Segment Tracking API).", "Call", "Success"
        )
    for short, call_type in SHORT_PATHS.items():
        paths[f"/v1/{short}"] = _post(
            f"analytics.js short path for {call_type}.", "Call", "Success"
        )
    for path in ("/v1/batch", "/v1/import", "/v1/b"):
        paths[path] = _post(
            "A batch of calls; bad items are listed, the rest stored.", "Batch", "Success"
        )
    paths["/web/projects/{public_key}/batch"] = _post(
        "Koala format (the Koala (Cloud) destination).",
        "KoalaBatch",
        "KoalaSuccess",
        security=False,
        params=[KEY_PARAM],
    )
    paths["/v1/m"] = {
        "post": {
            "summary": 'analytics.js\'s own telemetry (`{"series": [...]}`): counted in'
            " `koala_receiver_sdk_metrics_total`, never stored (not calls).",
            "requestBody": {"content": {"text/plain": {"schema": {"type": "object"}}}},
            "responses": {"200": _json("Success", "Counted."), "400": ERRORS["400"]},
        }
    }
    paths["/web/projects/{public_key}/auth"] = {
        "get": {
            "summary": "Segment's connection test: 204 for a valid key.",
            "parameters": [KEY_PARAM],
            "responses": {"204": {"description": "Valid key."}, "401": ERRORS["401"]},
        }
    }
    webhook = _post(
        "Segment webhook destination: one call or a JSON array of calls. A"
        ' `{"type": "delete", "userId": ...}` call erases that person\'s data; it is taken'
        " only when the project has a webhook secret and the signature covers it (the body,"
        " or the first item of an array).",
        "Call",
        "Success",
        security=False,
        params=[
            KEY_PARAM,
            {
                "name": "X-Signature",
                "in": "header",
                "required": False,
                "description": "Hex HMAC-SHA1 of the body (of the first item for an"
                " array), required when the project has a secret.",
                "schema": {"type": "string"},
            },
        ],
    )
    paths["/webhooks/segment/{public_key}"] = webhook
    paths["/healthz"] = {
        "get": {"summary": "Liveness.", "responses": {"200": {"description": "The process is up."}}}
    }
    paths["/readyz"] = {
        "get": {
            "summary": "Readiness of this receiver: Redis reachable, project keys loaded."
            " Cluster-wide conditions (queue at its ceiling, circuit breaker open) are listed"
            " as `warnings` without failing readiness.",
            "responses": {
                "200": {"description": "Ready, with `warnings`."},
                "503": {"description": "Not ready, with reasons."},
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics.",
            "responses": {"200": {"description": "Text format."}},
        }
    }
    paths.update(_admin_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "koala-ingest receiver",
            "version": "1",
            "description": "Receives Segment calls (Tracking API, Koala format, webhooks) and"
            " queues them. `200` means every accepted call is in the queue. Browsers: `/v1/*`"
            " and `/web/projects/*` answer CORS preflights (`OPTIONS`) for any origin and put"
            " CORS headers on every answer to a request with `Origin`; a project with allowed"
            " origins refuses calls from others (`403`).",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN."},
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Write key as the user name, empty password.",
                },
            },
        },
    }


def _admin_get(summary: str, params: list[dict[str, Any]], ok: str) -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "get": {
            "summary": summary,
            "security": [{"adminToken": []}],
            "parameters": [name, *params],
            "responses": {
                "200": {"description": ok},
                "400": ERRORS["400"],
                "401": _json("Error", "Missing or wrong Bearer token."),
                "404": _json("Error", "No such project or profile."),
            },
        }
    }


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": kind},
    }


def _admin_paths() -> dict[str, Any]:
    base = "/admin/projects/{name}"
    lookups = [
        _query(k, f"Find the profile holding this {k}.")
        for k in ("email", "profile_id", "user_id", "anonymous_id")
    ]
    page = [
        _query("limit", "At most this many (1-1000).", "integer"),
        _query("cursor", "`next` of the previous page."),
    ]
    letter = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    job = letter
    profile = {"name": "profile_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    return {
        base + "/stats": _admin_get(
            "Counts: received = stored + duplicates + rejected + dead_lettered + in_flight.",
            [],
            "`received`, `stored`, `duplicates`, `conflicting_duplicates`, `rejected`,"
            " `dead_lettered`, `in_flight`, `queue_depth`.",
        ),
        base + "/profiles": _admin_get(
            "Profiles by one identifier (an email is normalized first).",
            lookups,
            '`{"profiles": [...]}` with ids, identifiers, traits, accounts, counts.',
        ),
        base + "/profiles/{profile_id}/events": _admin_get(
            "A profile's events, newest first.",
            [profile, *page],
            '`{"events": [...], "next": cursor or null}`.',
        ),
        base + "/dead-letters": _admin_get(
            "Dead letters (default: pending), filtered; with counts by reason.",
            [
                _query("reason", "Reason code."),
                _query("status", "pending (default), replaying, replayed or discarded."),
                _query("since", "ISO-8601."),
                _query("until", "ISO-8601."),
                page[0],
            ],
            '`{"dead_letters": [...], "counts": {reason: n}}`.',
        ),
        base + "/dead-letters/replay": {
            "post": {
                "summary": "Replay dead letters by `ids` or by filter (`reason`, `since`, `until`);"
                " `dry_run` shows what would be replayed; `payload` corrects one letter.",
                "security": [{"adminToken": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": {"description": '`{"matched": n, "replayed": n}`.'},
                    "400": ERRORS["400"],
                    "401": _json("Error", "Missing or wrong token."),
                },
            }
        },
        base + "/dead-letters/reset": _admin_write(
            "post",
            "Put letters stuck in `replaying` (their replay message was lost) back to"
            " `pending` by `ids`; the hourly expire job does it after"
            " KOALA_REPLAY_STUCK_SECONDS.",
            {
                "ids": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 1,
                }
            },
            '`{"reset": n}`.',
        ),
        base + "/dead-letters/{id}": {
            **_admin_get("One dead letter with its traceback.", [letter], "The letter."),
            "delete": {
                **_admin_get(
                    "Discard a pending dead letter (it stays visible).",
                    [letter],
                    '`{"discarded": 1}`.',
                )["get"]
            },
        },
        base + "/rejections": _admin_get(
            "Calls refused for their content, newest first.",
            [page[0]],
            '`{"rejections": [...]}` with code, message and payload.',
        ),
        base + "/allowed-origins": _admin_write(
            "put",
            "Set the origins whose browsers may send for this project (`scheme://host[:port]`,"
            " `https://*.acme.com` for subdomains), or `null` for any origin (the default)."
            " Receivers apply it within KOALA_KEY_CACHE_SECONDS.",
            {
                "allowed_origins": {
                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                }
            },
            '`{"project": name, "allowed_origins": [...]|null}`.',
        ),
        base + "/deletions": _admin_get(
            "Delete calls carried out, newest first: what each named and what it erased.",
            [page[0]],
            '`{"deletions": [...]}` with message_id, identifiers and counts per table.',
        ),
        base + "/reprocess": {
            "post": {
                "summary": "Normalize and resolve the project's events with `since <= timestamp"
                " < until` again, on the workers (same parameters as an unfinished run: that run"
                " resumes, unless `restart`).",
                "security": [{"adminToken": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["since", "until"],
                                "properties": {
                                    "since": {"type": "string", "format": "date-time"},
                                    "until": {"type": "string", "format": "date-time"},
                                    "batch_size": {"type": "integer", "minimum": 1},
                                    "restart": {"type": "boolean"},
                                },
                            }
                        }
                    }
                },
                "responses": {
                    "202": {"description": '`{"job_id": n, "resumed": bool}`; `Location` of it.'},
                    "400": ERRORS["400"],
                    "401": _json("Error", "Missing or wrong token."),
                    "404": _json("Error", "No such project."),
                    "409": _json("Error", "A reprocessing of this project is active."),
                },
            }
        },
        "/admin/jobs": _jobs_get(
            "Job runs (reprocessing, scheduled jobs), newest first.",
            [
                _query("kind", "One of " + ", ".join(NAMES) + "."),
                page[0],
                _query("before", "`next` of the previous page (a job id).", "integer"),
            ],
            '`{"jobs": [...], "next": id or null}`.',
        ),
        "/admin/jobs/{id}": _jobs_get(
            "One job run.",
            [job],
            "`id`, `kind`, `project`, `params`, `trigger`, `status`, `done`, `total`,"
            " `counts`, `errors`, `cursor`, times.",
        ),
        "/admin/jobs/{id}/cancel": {
            "post": {
                **_jobs_get(
                    "Cancel a job: at once if not running, at its next step if running.",
                    [job],
                    '`{"job_id": n, "status": s, "cancel_requested": true}`.',
                )["get"]
            }
        },
    }


def _admin_write(method: str, summary: str, fields: dict[str, Any], ok: str) -> dict[str, Any]:
    """An admin operation on a project with a JSON object body whose `fields` are all
    required."""
    return {
        method: {
            "summary": summary,
            "security": [{"adminToken": []}],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": list(fields),
                            "properties": fields,
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": ok},
                "400": ERRORS["400"],
                "401": _json("Error", "Missing or wrong token."),
                "404": _json("Error", "No such project."),
            },
        }
    }


def _jobs_get(summary: str, params: list[dict[str, Any]], ok: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "security": [{"adminToken": []}],
            "parameters": params,
            "responses": {
                "200": {"description": ok},
                "400": ERRORS["400"],
                "401": _json("Error", "Missing or wrong Bearer token."),
                "404": _json("Error", "No such job."),
            },
        }
    }
