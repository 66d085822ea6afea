"""Request bodies into calls: the receiver's pure rules."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
from typing import Any

import pytest

from ingest.wire import (
    BodyReader,
    WireError,
    basic_auth_key,
    content_message_id,
    decode_json,
    parse_koala,
    parse_segment,
    parse_webhook,
    webhook_signature_ok,
)

NOW = "2026-11-23T00:00:00.000Z"


TRACK_U = {"type": "track", "event": "E", "userId": "u"}


def nested(depth: int) -> Any:
    """Properties `depth` levels deep, as orjson decodes `{"a":{"a":...}}`."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


LIMITS = {"max_call_bytes": 32 * 1024, "max_batch_calls": 2500, "received_at": NOW}


def segment(doc: object, path_type: str | None = None):
    return parse_segment(doc, path_type, raw=json.dumps(doc).encode(), **LIMITS)


def test_basic_auth_key_is_the_user_name() -> None:
    header = "Basic " + base64.b64encode(b"pk_abc:").decode()
    assert basic_auth_key(header) == "pk_abc"
    assert basic_auth_key(None) is None
    assert basic_auth_key("Bearer x") is None
    with pytest.raises(WireError) as error:
        basic_auth_key("Basic !!!")
    assert error.value.status == 401


def test_single_call_takes_its_type_from_the_path_and_gets_stamps() -> None:
    parsed = segment({"userId": "u", "event": "E", "writeKey": "k"}, "track")
    assert parsed.write_key == "k"
    [call] = parsed.calls
    assert call["type"] == "track" and call["receivedAt"] == NOW
    assert "writeKey" not in call
    assert call["messageId"].startswith("ki-")


def test_received_at_from_the_client_is_never_trusted() -> None:
    parsed = segment({"userId": "u", "event": "E", "receivedAt": "1999-01-01T00:00:00Z"}, "track")
    assert parsed.calls[0]["receivedAt"] == NOW


def test_missing_message_id_is_derived_from_content_so_a_retry_dedupes() -> None:
    call = {"userId": "u", "event": "E", "timestamp": "2026-01-01T00:00:00Z"}
    first = segment(dict(call, sentAt="2026-01-01T00:00:01Z"), "track").calls[0]["messageId"]
    retry = segment(dict(call, sentAt="2026-01-01T00:00:09Z"), "track").calls[0]["messageId"]
    other = segment(dict(call, event="F"), "track").calls[0]["messageId"]
    assert first == retry != other
    assert len(first) <= 100
    assert content_message_id({"a": 1, "b": 2}) == content_message_id({"b": 2, "a": 1})


def test_two_koala_visitors_sending_the_same_event_without_an_id_never_collide() -> None:
    """The derived id covers Koala's request-level identity: the same event of two visitors
    is two calls (it was one, and the second visitor's was dropped as a duplicate)."""

    def koala_id(doc: dict[str, Any]) -> str:
        item = {"event": "Viewed Pricing", "sent_at": "2026-01-01T00:00:00Z"}
        return str(parse_koala({**doc, "events": [item]}, **LIMITS).calls[0]["message_id"])

    ann = koala_id({"profile_id": "ko-ann"})
    bob = koala_id({"profile_id": "ko-bob"})
    by_email = koala_id({"email": "ann@acme.com"})
    assert len({ann, bob, by_email}) == 3
    assert koala_id({"profile_id": "ko-ann"}) == ann  # a retry still dedupes


def test_batch_context_integrations_and_sent_at_merge_into_items_item_wins() -> None:
    doc = {
        "batch": [
            {"type": "track", "event": "A", "userId": "u", "context": {"ip": "1.1.1.1"}},
            {"type": "page", "anonymousId": "a", "sentAt": "2026-01-02T00:00:00Z"},
        ],
        "context": {"ip": "9.9.9.9", "library": {"name": "x"}},
        "integrations": {"All": False},
        "sentAt": "2026-01-01T00:00:00Z",
    }
    a, b = segment(doc).calls
    assert a["context"] == {"ip": "1.1.1.1", "library": {"name": "x"}}
    assert b["context"] == {"ip": "9.9.9.9", "library": {"name": "x"}}
    assert a["integrations"] == {"All": False}
    assert (a["sentAt"], b["sentAt"]) == ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")


@pytest.mark.parametrize(
    ("item", "code"),
    [
        ({"event": "E", "userId": "u"}, "missing_type"),
        ({"type": "fly", "userId": "u"}, "unknown_type"),
        ({"type": "track", "userId": "u"}, "missing_event"),
        ({"type": "group", "userId": "u"}, "missing_group_id"),
        ({"type": "alias", "userId": "u"}, "missing_previous_id"),
        ({"type": "alias", "previousId": "p"}, "missing_user_id"),
        ({"type": "track", "event": "E"}, "missing_identity"),
        ({"type": "track", "event": "E", "userId": "u", "properties": []}, "invalid_field"),
        (
            {"type": "track", "event": "E", "userId": "u", "messageId": "x" * 101},
            "invalid_message_id",
        ),
        ("not a call", "not_an_object"),
        (
            {"type": "track", "event": "E", "userId": "u", "messageId": "a\x00b"},
            "invalid_message_id",
        ),
        (
            {"type": "track", "event": "E", "userId": "u", "properties": {"x": "y" * 40000}},
            "call_too_large",
        ),
        # issue #13's fuzzing: each of these raised a 500 or was dead-lettered (or stored
        # wrong) later, for the call's shape alone
        ({"type": [1], "userId": "u"}, "invalid_type"),
        ({"type": {"a": 1}, "userId": "u"}, "invalid_type"),
        ({"type": "track", "event": 5, "userId": "u"}, "invalid_event"),
        ({"type": "track", "event": ["E"], "userId": "u"}, "invalid_event"),
        ({"type": "identify", "userId": {"id": 1}}, "invalid_id"),
        ({"type": "identify", "userId": "u", "anonymousId": [1]}, "invalid_id"),
        ({"type": "identify", "userId": True}, "invalid_id"),
        ({"type": "group", "userId": "u", "groupId": {"x": 1}}, "invalid_id"),
        ({"type": "alias", "userId": "u", "previousId": False}, "invalid_id"),
        ({"type": "identify", "userId": "u", "timestamp": 123}, "invalid_timestamp"),
        ({"type": "identify", "userId": "u", "timestamp": "yesterday"}, "invalid_timestamp"),
        ({"type": "identify", "userId": "u", "sentAt": 1.5e12}, "invalid_timestamp"),
        (
            # the skew rule would move it out of the calendar: normalize dead-lettered it
            {
                "type": "identify",
                "userId": "u",
                "timestamp": "9999-12-31T00:00:00Z",
                "sentAt": "0001-01-02T00:00:00Z",
            },
            "invalid_timestamp",
        ),
        ({"type": "page", "userId": "u", "name": {"x": 1}}, "invalid_name"),
        ({"type": "screen", "userId": "u", "properties": {"name": 5}}, "invalid_name"),
        ({"type": "track", "event": "E", "userId": "u\x00"}, "invalid_text"),
        ({"type": "track", "event": "E\x00", "userId": "u"}, "invalid_text"),
        (
            {"type": "track", "event": "E", "userId": "u", "properties": {"a": ["\x00"]}},
            "invalid_text",
        ),
        (
            {"type": "track", "event": "E", "userId": "u", "properties": {"k\x00": 1}},
            "invalid_text",
        ),
        (
            {"type": "track", "event": "E", "userId": "u", "properties": nested(300)},
            "too_deep",
        ),
        (
            {"type": "track", "event": "E", "userId": "u", "properties": nested(130)},
            "too_deep",
        ),
    ],
)
def test_a_bad_item_is_rejected_by_index_and_the_rest_kept(item: object, code: str) -> None:
    good = {"type": "identify", "userId": "u", "traits": {"email": "a@b.co"}}
    parsed = segment({"batch": [good, item, good]})
    assert len(parsed.calls) == 2
    [rejection] = parsed.rejected
    assert (rejection.index, rejection.code) == (1, code)
    assert rejection.payload  # kept for the operator
    assert parsed.received == 3


def test_a_batch_over_the_call_limit_is_413() -> None:
    with pytest.raises(WireError) as error:
        parse_segment(
            {"batch": [{}] * 3},
            None,
            raw=b"{}",
            max_call_bytes=1000,
            max_batch_calls=2,
            received_at=NOW,
        )
    assert (error.value.status, error.value.code) == (413, "too_many_calls")


@pytest.mark.parametrize("doc", [[1, 2], "x", {"batch": "no"}])
def test_a_bad_envelope_is_400(doc: object) -> None:
    with pytest.raises(WireError) as error:
        segment(doc)
    assert error.value.status == 400


def test_invalid_json_is_400() -> None:
    for body in (b"{", b"", b"   "):
        with pytest.raises(WireError) as error:
            decode_json(body)
        assert error.value.code == "invalid_json"


def test_body_reader_inflates_gzip() -> None:
    reader = BodyReader(1000, "gzip")
    payload = gzip.compress(b'{"a": 1}')
    for i in range(0, len(payload), 3):
        reader.feed(payload[i : i + 3])
    assert reader.finish() == b'{"a": 1}'


def test_gzip_bomb_is_stopped_at_the_limit_without_inflating_it() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)  # 50 MB of zeros in ~50 KB
    reader = BodyReader(500 * 1024, "gzip")
    with pytest.raises(WireError) as error:
        reader.feed(bomb)
    assert (error.value.status, error.value.code) == (413, "request_too_large")
    assert sum(len(p) for p in reader._parts) <= 500 * 1024


def test_plain_body_over_the_limit_is_413() -> None:
    reader = BodyReader(10, None)
    reader.feed(b"12345")
    with pytest.raises(WireError):
        reader.feed(b"1234567")


def test_truncated_or_corrupt_gzip_is_400() -> None:
    payload = gzip.compress(b'{"a": 1}' * 100)
    reader = BodyReader(10_000, "gzip")
    reader.feed(payload[: len(payload) // 2])
    with pytest.raises(WireError) as error:
        reader.finish()
    assert error.value.status == 400
    with pytest.raises(WireError):
        BodyReader(10_000, "gzip").feed(b"not gzip at all")


def test_unknown_content_encoding_is_415() -> None:
    with pytest.raises(WireError) as error:
        BodyReader(10, "br")
    assert error.value.status == 415


def test_koala_body_splits_lists_and_keeps_shared_fields() -> None:
    doc = {
        "profile_id": "6f1c...",
        "email": "A@B.co",
        "ip": "1.2.3.4",
        "traits": {"plan": "x"},
        "events": [{"type": "track", "event": "Signed Up", "message_id": "m1"}],
        "identifies": [{"traits": {"name": "Ann"}, "message_id": "m2"}],
        "page_views": [{"url": "https://x.io/pricing"}],
    }
    parsed = parse_koala(doc, **LIMITS)
    assert [c["type"] for c in parsed.calls] == ["track", "identify", "page"]
    assert parsed.shared == {
        "profile_id": "6f1c...",
        "email": "A@B.co",
        "ip": "1.2.3.4",
        "traits": {"plan": "x"},
    }
    assert parsed.calls[2]["message_id"].startswith("ki-")


def test_koala_body_without_email_or_profile_id_is_400() -> None:
    with pytest.raises(WireError) as error:
        parse_koala({"events": [{"event": "x"}]}, **LIMITS)
    assert (error.value.status, error.value.message) == (
        400,
        "Missing required field: email or profile_id",
    )


def test_webhook_takes_one_call_or_an_array() -> None:
    call = {"type": "track", "event": "E", "userId": "u", "messageId": "m"}
    assert len(parse_webhook(call, **LIMITS).calls) == 1
    parsed = parse_webhook([call, dict(call, messageId="n"), {"type": "track"}], **LIMITS)
    assert len(parsed.calls) == 2 and parsed.rejected[0].index == 2


def _sign(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha1).hexdigest()


def test_webhook_signature_is_hmac_sha1_of_the_body() -> None:
    body = b'{"type":"track","event":"E"}'
    assert webhook_signature_ok("s", body, _sign("s", body))
    assert webhook_signature_ok("s", body, _sign("s", body).upper())
    assert not webhook_signature_ok("s", body, _sign("other", body))
    assert not webhook_signature_ok("s", body, None)


def test_webhook_batch_signature_is_of_its_first_item_as_sent() -> None:
    first = '{"type":"track","event":"Ünïcode","n":1.5}'
    body = f'[{first},{{"type":"page"}}]'.encode()
    assert webhook_signature_ok("s", body, _sign("s", first.encode()))
    assert not webhook_signature_ok("s", body, _sign("s", json.dumps({"x": 1}).encode()))


def test_nesting_below_the_limit_and_a_nul_escape_written_as_text_are_kept() -> None:
    """The byte tests only select calls for the exact walk: `\\u0000` spelled out in a
    string (a backslash, then `u0000`) is no NUL, and 100 levels are within the limit."""
    call = {"type": "track", "event": "E", "userId": "u", "properties": {"t": "\\u0000"}}
    deep = {"type": "track", "event": "E", "userId": "u", "properties": nested(100)}
    parsed = segment({"batch": [call, deep]})
    assert len(parsed.calls) == 2 and not parsed.rejected


DEEP_1000 = b'{"a":' * 1000 + b"1" + b"}" * 1001


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"userId": "u", "event": "E", "properties": {"x": "a\\u0000"}}', "invalid_text"),
        (
            b'{"userId": "u", "event": "E", "properties": ' + b'{"a":' * 1000 + b"1" + b"}" * 1001,
            "too_deep",
        ),
        (b'{"userId": "u", "event": 5}', "invalid_event"),
        (b'{"userId": "u", "event": "E", "timestamp": 123}', "invalid_timestamp"),
    ],
)
def test_a_single_call_that_can_never_be_stored_is_one_rejection(body: bytes, code: str) -> None:
    parsed = parse_segment(decode_json(body), "track", raw=body, **LIMITS)  # type: ignore[arg-type]
    assert not parsed.calls
    assert [r.code for r in parsed.rejected] == [code]
    assert "\x00" not in parsed.rejected[0].payload  # PostgreSQL text refuses it


def test_a_nul_only_in_the_write_key_of_a_single_call_is_not_the_calls() -> None:
    body = b'{"userId": "u", "event": "E", "writeKey": "k\\u0000"}'
    parsed = parse_segment(decode_json(body), "track", raw=body, **LIMITS)  # type: ignore[arg-type]
    assert len(parsed.calls) == 1


@pytest.mark.parametrize("kind", [[1], {"a": 1}, 5, True])
def test_an_item_whose_type_is_not_a_string_is_rejected_on_every_path(kind: object) -> None:
    """`{"batch":[{"type":[1]}]}` raised `TypeError: unhashable` and sank the batch."""
    good = {"type": "identify", "userId": "u"}
    bad = {"type": kind, "userId": "u"}
    for parsed in (
        segment({"batch": [good, bad]}),
        parse_webhook([good, bad], **LIMITS),  # type: ignore[arg-type]
        parse_koala({"profile_id": "p", "events": [{"event": "E"}, bad]}, **LIMITS),  # type: ignore[arg-type]
    ):
        assert len(parsed.calls) == 1
        assert [(r.index, r.code) for r in parsed.rejected] == [(1, "invalid_type")]


@pytest.mark.parametrize(
    "shared",
    [{"profile_id": "p\x00"}, {"profile_id": "p", "traits": nested(300)}],
)
def test_koala_request_fields_that_can_never_be_stored_refuse_the_request(
    shared: dict[str, Any],
) -> None:
    with pytest.raises(WireError) as error:
        parse_koala({**shared, "events": [{"event": "E"}]}, **LIMITS)  # type: ignore[arg-type]
    assert error.value.status == 400
    assert error.value.code in ("invalid_text", "too_deep")


def test_koala_page_title_and_times_follow_the_same_rules() -> None:
    doc = {
        "profile_id": "p",
        "page_views": [{"title": {"x": 1}}, {"sent_at": 123}, {"sent_at": "2026-01-01T00:00:00Z"}],
    }
    parsed = parse_koala(doc, **LIMITS)  # type: ignore[arg-type]
    assert [r.code for r in parsed.rejected] == ["invalid_name", "invalid_timestamp"]
    assert len(parsed.calls) == 1


def test_evidence_of_a_raw_body_never_holds_a_nul() -> None:
    from ingest.wire import evidence_text

    assert evidence_text(b"a\x00b" + b"x" * 10_000) == "a\\u0000b" + "x" * 4093


def test_a_signed_webhook_body_nested_past_pythons_decoder_is_no_match_not_an_error() -> None:
    """`_first_array_item` decodes with Python's json, which raises RecursionError near
    1,000 levels (orjson decodes up to 1,024): that was a 500 on signed projects."""
    body = b"[" * 1020 + b"]" * 1020
    assert not webhook_signature_ok("whsec", body, "0" * 40)
