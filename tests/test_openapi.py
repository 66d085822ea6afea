"""`/openapi.json` describes every endpoint the receiver serves."""

from __future__ import annotations

import pytest
from starlette.routing import Route

from ingest import openapi
from ingest.config import Settings
from ingest.receiver import create_app


@pytest.fixture
def app_paths() -> set[str]:
    app = create_app(Settings(DATABASE_URL="postgresql://x/y", REDIS_URL="redis://x"))
    return {r.path for r in app.routes if isinstance(r, Route)} - {"/openapi.json"}


def test_every_route_is_documented(app_paths: set[str]) -> None:
    spec = openapi.build()
    assert app_paths == set(spec["paths"])


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
