"""Property-based tests (hypothesis) of the wire parser and the normalizer, then of the
receiver itself: any JSON document, any bytes, any encoding header end in a `2xx` or a
`4xx`, and every call is stored, rejected or dead-lettered (issue #13).

The default run is bounded (`KOALA_FUZZ_EXAMPLES`, 200 examples a property, a few
seconds for the pure ones and about half a minute against the servers); a larger run:

    KOALA_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/test_fuzz_wire.py
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from conftest import Proc, Receiver, Servers, reconciled, start_receiver, start_worker, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.store import projects
from ingest.store.projects import Project
from ingest.wire import (
    CALL_TYPES,
    MAX_DEPTH,
    BodyReader,
    Parsed,
    WireError,
    decode_json,
    has_nul,
    parse_koala,
    parse_segment,
    parse_webhook,
)
from workers.normalize import Rules, normalize

EXAMPLES = int(os.environ.get("KOALA_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
NOW = "2026-11-23T00:00:00.000Z"
LIMITS = {"max_call_bytes": 32 * 1024, "max_batch_calls": 2500, "received_at": NOW}
RULES = Rules(frozenset({"null", "undefined", "0"}))

# --- strategies ----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "\x00", "a\x00b", "null", "0", "ann@acme.com"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
deep = st.integers(min_value=MAX_DEPTH - 2, max_value=400).map(
    lambda n: orjson.loads(b"[" * n + b"]" * n)
)
times = (
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    | st.datetimes().map(lambda d: d.isoformat())
    | scalars
)
ids = st.text(min_size=1, max_size=12) | st.integers() | json_values
call_fields = {
    "type": st.sampled_from(sorted(CALL_TYPES)) | st.sampled_from(["delete", "fly"]) | json_values,
    "event": st.text(max_size=12) | json_values,
    "name": st.text(max_size=12) | json_values,
    "userId": ids,
    "anonymousId": ids,
    "groupId": ids,
    "previousId": ids,
    "messageId": st.text(max_size=12) | st.integers() | json_values,
    "timestamp": times,
    "originalTimestamp": times,
    "sentAt": times,
    "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    | json_values
    | deep,
    "traits": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
    "context": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
}
# calls a real SDK could send, with any JSON in their free-form fields: most are taken,
# and the properties then say the workers can take them too
good_calls = st.fixed_dictionaries(
    {
        "type": st.sampled_from(sorted(CALL_TYPES)),
        "userId": st.text(min_size=1, max_size=12) | st.integers(),
        "event": st.text(min_size=1, max_size=12),
        "groupId": st.text(min_size=1, max_size=12),
        "previousId": st.text(min_size=1, max_size=12),
    },
    optional={
        "anonymousId": st.text(min_size=1, max_size=12),
        "messageId": st.text(min_size=1, max_size=30),
        "timestamp": times,
        "sentAt": times,
        "name": st.text(max_size=12),
        "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        "traits": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        "context": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    },
)
calls = good_calls | st.fixed_dictionaries({}, optional=call_fields) | json_values
koala_items = st.fixed_dictionaries(
    {"event": st.text(min_size=1, max_size=12) | call_fields["event"]},
    optional={
        "type": call_fields["type"],
        "title": call_fields["name"],
        "message_id": call_fields["messageId"],
        "sent_at": times,
        "properties": call_fields["properties"],
        "email": ids,
    },
)
koala_docs = st.fixed_dictionaries(
    {"profile_id": st.text(min_size=1, max_size=12) | ids},
    optional={
        "email": ids,
        "traits": call_fields["traits"] | deep,
        "ip": ids,
        "events": st.lists(koala_items, max_size=4) | json_values,
        "identifies": st.lists(koala_items, max_size=3),
        "page_views": st.lists(koala_items, max_size=3),
    },
)
segment_docs = st.fixed_dictionaries(
    {"batch": st.lists(calls, max_size=5)},
    optional={"sentAt": times, "context": json_values, "writeKey": json_values},
)


def roundtrip(doc: Any) -> tuple[Any, bytes] | None:
    """The document as the receiver gets it: encoded, then decoded (None if JSON cannot
    carry it, e.g. nested past the encoder)."""
    try:
        raw = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return None
    return decode_json(raw), raw


def check_parsed(parsed: Parsed, items: int, source: str) -> None:
    """Every item is a call or a rejection, and every call is one the workers can take:
    it encodes inside the queue's envelope, holds no NUL, normalizes, and gives the store
    text where it writes text."""
    assert parsed.received == items
    for rejection in parsed.rejected:
        assert rejection.code and rejection.message
        assert "\x00" not in rejection.payload
    for call in parsed.calls:
        orjson.dumps([[{"calls": [call], "shared": parsed.shared}], {}, {}])
        assert not has_nul(call)
        event = normalize(1, source, call, parsed.shared, RULES)
        for text in (event.event, event.name, event.message_id, event.type):
            assert text is None or isinstance(text, str)


# --- the pure parser ---------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused_with_400(body: bytes) -> None:
    try:
        decode_json(body)
    except WireError as error:
        assert (error.status, error.code) == (400, "invalid_json")


@FUZZ
@given(
    st.binary(max_size=300) | st.binary(max_size=300).map(gzip.compress),
    st.none()
    | st.sampled_from(["gzip", "x-gzip", "deflate", "identity", "", "br", " GZIP ", "gzip, br"])
    | st.text(max_size=10),
)
def test_any_body_with_any_encoding_header_reads_or_is_refused_with_4xx(
    body: bytes, encoding: str | None
) -> None:
    try:
        reader = BodyReader(1024, encoding)
        reader.feed(body)
        reader.finish()
    except WireError as error:
        assert 400 <= error.status < 500 and error.code


@FUZZ
@given(json_values | segment_docs | calls)
def test_any_json_document_on_a_segment_path_ends_in_calls_and_rejections(doc: Any) -> None:
    got = roundtrip(doc)
    if got is None:
        return
    for path_type in (None, "track", "page"):
        value, raw = roundtrip(doc) or got
        try:
            parsed = parse_segment(value, path_type, raw=raw, **LIMITS)  # type: ignore[arg-type]
        except WireError as error:
            assert 400 <= error.status < 500
            continue
        items = 1 if path_type else len(value["batch"])
        check_parsed(parsed, items, "segment")


@FUZZ
@given(koala_docs | json_values)
def test_any_json_document_on_the_koala_path_ends_in_calls_and_rejections(doc: Any) -> None:
    got = roundtrip(doc)
    if got is None:
        return
    value, _ = got
    try:
        parsed = parse_koala(value, **LIMITS)  # type: ignore[arg-type]
    except WireError as error:
        assert 400 <= error.status < 500
        return
    items = sum(len(value.get(name) or []) for name in ("events", "identifies", "page_views"))
    check_parsed(parsed, items, "koala")


@FUZZ
@given(st.lists(calls, max_size=5) | calls, st.booleans())
def test_any_json_document_on_the_webhook_path_ends_in_calls_and_rejections(
    doc: Any, signed: bool
) -> None:
    got = roundtrip(doc)
    if got is None:
        return
    value, _ = got
    try:
        parsed = parse_webhook(value, signed=signed, **LIMITS)  # type: ignore[arg-type]
    except WireError as error:
        assert 400 <= error.status < 500
        return
    check_parsed(parsed, len(value) if isinstance(value, list) else 1, "webhook")


# --- the receiver and a worker -------------------------------------------------------


class Pipeline:
    def __init__(self, rx: Receiver, worker: Proc, project: Project) -> None:
        self.rx = rx
        self.worker = worker
        self.project = project
        self.statuses: dict[int, int] = {}


@pytest.fixture(scope="module")
def pipeline(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-wire")
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        project = projects.create(conn, f"fuzz-wire-{os.getpid()}")
    rx = start_receiver(servers, tmp, ADMIN_TOKEN="fuzz-wire")
    worker = start_worker(servers, tmp, name="fuzz-wire")
    yield Pipeline(rx, worker, project)
    worker.stop()
    rx.proc.stop()


PATHS = [
    "/v1/track",
    "/v1/page",
    "/v1/batch",
    "/v1/import",
    "/v1/b",
    "/v1/t",
    "/web/projects/{key}/batch",
    "/webhooks/segment/{key}",
]


def _body(kind: str, doc: Any, raw: bytes) -> bytes:
    if kind == "json":
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:
            return b"[]"
    return raw


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    path=st.sampled_from(PATHS),
    kind=st.sampled_from(["json", "json", "json", "bytes"]),
    doc=segment_docs | calls | koala_docs | st.lists(calls, max_size=4) | json_values,
    raw=st.binary(max_size=200),
    encoding=st.sampled_from([None, None, "gzip", "deflate", "identity", "br", "bogus"]),
    compress=st.booleans(),
)
def test_any_request_to_the_receiver_is_answered_2xx_or_4xx(
    pipeline: Pipeline,
    path: str,
    kind: str,
    doc: Any,
    raw: bytes,
    encoding: str | None,
    compress: bool,
) -> None:
    body = _body(kind, doc, raw)
    headers = {"Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if compress and encoding == "gzip":
            body = gzip.compress(body)
        elif compress and encoding == "deflate":
            body = zlib.compress(body)
    key = pipeline.project.public_key
    answer = httpx.post(
        pipeline.rx.url + path.format(key=key),
        content=body,
        headers=headers,
        auth=(key, "") if path.startswith("/v1") else None,
        timeout=30,
    )
    pipeline.statuses[answer.status_code] = pipeline.statuses.get(answer.status_code, 0) + 1
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert {"code", "message"} <= set(answer.json())


@pytest.mark.slow
def test_after_any_requests_every_call_is_stored_rejected_or_dead_lettered(
    pipeline: Pipeline,
) -> None:
    assert sum(pipeline.statuses.values()) >= EXAMPLES * 0.9, pipeline.statuses

    def settled() -> dict[str, Any] | None:
        stats = httpx.get(
            pipeline.rx.url + f"/admin/projects/{pipeline.project.name}/stats",
            headers={"Authorization": "Bearer fuzz-wire"},
        ).json()
        return stats if stats["in_flight"] == 0 else None

    stats: Any = wait_for(settled, timeout=120, interval=0.5)
    assert reconciled(stats), stats
    assert stats["received"] > 0
    for proc in (pipeline.rx.proc, pipeline.worker):
        assert "Traceback" not in proc.output(), proc.output()[-3000:]
    print(f"\nstatuses {pipeline.statuses}; project {stats}")
