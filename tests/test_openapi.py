"""`/openapi.json` describes every endpoint the receiver serves."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from ingest.api import openapi
from ingest.config import Settings
from ingest.receiver import create_app

UNDOCUMENTED = {"/openapi.json", "/docs", "/docs/init.js"}  # the documentation itself


@pytest.fixture
def app_routes() -> set[tuple[str, str]]:
    app = create_app(Settings(DATABASE_URL="postgresql://x/y", REDIS_URL="redis://x"))
    return {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path), method.lower())
        for r in app.routes
        if isinstance(r, Route)
        and r.path not in UNDOCUMENTED
        and not r.path.startswith("/console")  # pages for people, over the same operations
        for method in (r.methods or ()) - {"HEAD"}
    }


def test_every_route_and_method_is_documented(app_routes: set[tuple[str, str]]) -> None:
    spec = openapi.build()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert app_routes == documented


def test_the_document_is_valid_openapi() -> None:
    from openapi_spec_validator import validate

    validate(openapi.build())


def test_every_answer_of_every_operation_has_a_schema_or_says_why_not() -> None:
    spec = openapi.build()
    bare = [
        (path, method, status)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for status, answer in op["responses"].items()
        if "content" not in answer
        and path not in ("/healthz", "/readyz", "/metrics")
        and status != "204"
    ]
    assert bare == []


def test_every_reference_resolves() -> None:
    spec = openapi.build()
    text = str(spec)
    import re

    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in spec["components"]["schemas"]


def test_documented_models_accept_what_the_receiver_accepts() -> None:
    openapi.Batch.model_validate(
        {"batch": [{"type": "track", "event": "E", "userId": "u", "extra": 1}], "sentAt": "x"}
    )
    openapi.KoalaBatch.model_validate(
        {"profile_id": "p", "events": [{"event": "E", "message_id": "m"}]}
    )
