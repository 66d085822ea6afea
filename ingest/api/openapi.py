"""`GET /openapi.json`: every endpoint, its body and its answers, for a new user.

The admin API's part is generated from its route table (`ingest/api/routes.py`): each
endpoint's query, body and response models are the ones its requests are validated and
its answers serialized with. The receiver's bodies are pydantic models used for
documentation only: the hot path checks calls with the hand-written rules in `ingest.wire`
(one pass, per-item reasons), and tests/test_openapi.py checks the two agree on the
examples and that every route of the app is documented.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ingest.api.endpoint import Endpoint
from ingest.api.routes import ADMIN
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


RECEIVER_MODELS: tuple[type[BaseModel], ...] = (
    Call,
    Batch,
    KoalaBatch,
    Success,
    KoalaSuccess,
    Error,
)


def _schemas(endpoints: list[Endpoint]) -> tuple[dict[str, Any], dict[Any, Any]]:
    """Every model's JSON schema under components, and where each one is referenced from:
    bodies and queries as validated, answers as serialized (pydantic's two modes)."""
    wanted: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in RECEIVER_MODELS]
    for e in endpoints:
        wanted.append((e.response, "serialization"))
        wanted += [(m, "validation") for m in (e.body, e.query) if m is not None]
    refs, top = models_json_schema(
        list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}"
    )
    return top.get("$defs", {}), refs


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


ERRORS = {
    "400": _json(
        "Error",
        "Invalid JSON, envelope, or (single call) an invalid call, `not_identified` included"
        " (a project with `accept = identified`).",
    ),
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
    schemas, refs = _schemas(ADMIN)
    for e in ADMIN:
        paths.setdefault(e.openapi_path, {})[e.method.lower()] = _admin_operation(e, refs)
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
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ADMIN_TOKEN, or a token from `koala-ingest tokens create`"
                    " (a viewer reads, an operator reads and acts).",
                },
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Write key as the user name, empty password.",
                },
            },
        },
    }


ADMIN_ERRORS = {
    400: "The request does not fit: `invalid_request` names the fields (an unknown field"
    " included), or another code says what is wrong.",
    401: "Missing or wrong Bearer token.",
    403: "The token may not do this: a viewer acting, or an operator of other projects.",
    404: "No such project (or not one this token may see), letter, profile or job.",
    409: "The state forbids it now (a job of the same kind is running, a name is taken).",
}
UNAVAILABLE = {
    "description": "PostgreSQL or Redis unreachable: retry after `Retry-After` seconds.",
    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    "content": {"application/json": {"schema": _ref("Error")}},
}


def _admin_operation(e: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for name, kind in re.findall(r"\{(\w+)(?::(\w+))?\}", e.path):
        schema: dict[str, Any] = (
            {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
            if kind == "int"
            else {"type": "string"}
        )
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if e.query is not None:
        model = e.query.model_json_schema(ref_template="#/components/schemas/{model}")
        required = set(model.get("required", []))
        for name, schema in model["properties"].items():
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "description": schema.pop("description", ""),
                    "schema": schema,
                }
            )
    operation: dict[str, Any] = {
        "summary": e.summary,
        "tags": [e.tag],
        "security": [{"adminToken": []}],
        "parameters": params,
        "responses": {
            str(e.status): {
                "description": "Done." if e.acts else "Found.",
                "content": {"application/json": {"schema": refs[(e.response, "serialization")]}},
            },
            **{str(s): _json("Error", ADMIN_ERRORS[s]) for s in e.errors},
            "500": _json("Error", "An unexpected failure (logged with its traceback)."),
            "503": UNAVAILABLE,
        },
    }
    if e.description:
        operation["description"] = e.description
    if e.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(e.body, "validation")]}},
        }
    return operation
