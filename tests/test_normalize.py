"""Calls from every source into one canonical event: pure rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.config import DEFAULT_BLOCKED_IDENTIFIERS
from ingest.identifiers import Rules, clean_email, clean_identifier
from workers.normalize import NormalizeError, corrected_timestamp, domain_of, normalize, parse_time

BLOCKED = frozenset(DEFAULT_BLOCKED_IDENTIFIERS)
RULES = Rules(BLOCKED)
RECEIVED = "2026-11-23T12:00:10.000Z"


def seg(call: dict, source: str = "segment"):
    base = {"messageId": "m", "receivedAt": RECEIVED, "userId": "u"}
    return normalize(1, source, {**base, **call}, None, RULES)


def t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def test_clock_skew_rule_uses_received_minus_sent_minus_original() -> None:
    e = seg(
        {
            "type": "track",
            "event": "E",
            "timestamp": "2026-11-23T12:00:00Z",
            "sentAt": "2026-11-23T12:00:05Z",
        }
    )
    # the client clock is 5 s behind... the call was made 5 s before it was sent
    assert e.timestamp == t("2026-11-23T12:00:05Z")
    assert e.original_timestamp == t("2026-11-23T12:00:00Z")
    assert e.sent_at == t("2026-11-23T12:00:05Z")
    assert e.received_at == t(RECEIVED)


def test_without_sent_at_the_client_timestamp_is_kept_and_without_one_received_at() -> None:
    assert seg(
        {"type": "track", "event": "E", "timestamp": "2026-01-01T00:00:00+02:00"}
    ).timestamp == t("2025-12-31T22:00:00Z")
    assert seg({"type": "track", "event": "E"}).timestamp == t(RECEIVED)
    assert corrected_timestamp(t(RECEIVED), None, None) == t(RECEIVED)


def test_parse_time_accepts_iso_and_epoch_and_returns_utc() -> None:
    assert parse_time("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time(1767225600) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time(1767225600000) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


@pytest.mark.parametrize(
    ("call", "email"),
    [
        ({"type": "identify", "traits": {"email": " Ann@Acme.COM "}}, "ann@acme.com"),
        ({"type": "track", "event": "E", "context": {"traits": {"email": "b@x.io"}}}, "b@x.io"),
        ({"type": "track", "event": "E", "properties": {"email": "c@x.io"}}, "c@x.io"),
        ({"type": "identify", "traits": {"email": "not-an-email"}}, None),
        ({"type": "identify", "traits": {"email": "undefined"}}, None),
    ],
)
def test_email_comes_from_traits_context_traits_or_properties(call: dict, email: str) -> None:
    assert seg(call).ids.email == email


def test_profile_id_from_properties_traits_and_context_traits() -> None:
    assert (
        seg({"type": "track", "event": "E", "properties": {"profile_id": "k1"}}).ids.profile_id
        == "k1"
    )
    assert seg({"type": "identify", "traits": {"profile_id": "k2"}}).ids.profile_id == "k2"
    assert seg({"type": "page", "context": {"traits": {"profile_id": "k3"}}}).ids.profile_id == "k3"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "NULL",
        "undefined",
        "anonymous",
        "0",
        "-1",
        "[object Object]",
        "00000000-0000-0000-0000-000000000000",
        None,
        True,
        {},
        "  ",
    ],
)
def test_blocked_values_never_identify_anyone(value: object) -> None:
    assert clean_identifier(value, BLOCKED) is None
    e = seg({"type": "track", "event": "E", "userId": value, "anonymousId": value})
    assert e.ids.user_id is None and e.ids.anonymous_id is None


def test_blocked_list_is_whatever_is_configured() -> None:
    assert clean_identifier("guest", frozenset({"guest"})) is None
    assert clean_identifier("null", frozenset({"guest"})) == "null"
    assert clean_email("a@b.co", frozenset({"a@b.co"})) is None


def test_identify_traits_fall_back_to_context_traits() -> None:
    e = seg({"type": "identify", "context": {"traits": {"name": "Ann", "email": "a@b.co"}}})
    assert e.traits == {"name": "Ann", "email": "a@b.co"}


def test_page_takes_url_path_referrer_title_from_context_page() -> None:
    e = seg(
        {
            "type": "page",
            "name": "Pricing",
            "context": {
                "page": {
                    "url": "https://x.io/pricing",
                    "path": "/pricing",
                    "referrer": "https://g.co",
                    "title": "Pricing",
                    "search": "?a=1",
                }
            },
        }
    )
    assert e.name == "Pricing"
    assert e.properties["url"] == "https://x.io/pricing" and e.properties["path"] == "/pricing"
    assert e.properties["referrer"] == "https://g.co" and e.properties["title"] == "Pricing"


def test_group_makes_an_account_with_domain_from_traits() -> None:
    e = seg(
        {
            "type": "group",
            "groupId": "g1",
            "traits": {"name": "Acme", "website": "https://www.Acme.com/about"},
        }
    )
    assert e.account == {
        "group_id": "g1",
        "domain": "acme.com",
        "name": "Acme",
        "company": "acme.com",  # the company domain it joins (ingest/companies.py)
        "traits": {"name": "Acme", "website": "https://www.Acme.com/about"},
    }
    assert domain_of("acme.io") == "acme.io"


def test_ip_from_context() -> None:
    assert seg({"type": "track", "event": "E", "context": {"ip": "1.2.3.4"}}).ip == "1.2.3.4"


def test_webhook_calls_normalize_like_api_calls() -> None:
    e = seg({"type": "track", "event": "E"}, source="webhook")
    assert e.source == "webhook" and e.event == "E"


def test_koala_item_takes_shared_profile_id_email_traits_and_ip() -> None:
    shared = {
        "profile_id": "ko-1",
        "email": "Ann@Acme.com",
        "ip": "5.6.7.8",
        "traits": {"plan": "pro"},
    }
    item = {
        "type": "track",
        "event": "Viewed",
        "message_id": "k1",
        "receivedAt": RECEIVED,
        "sent_at": "2026-11-20T10:00:00Z",
        "properties": {"x": 1},
        "traits": {"role": "cto"},
    }
    e = normalize(1, "koala", item, shared, RULES)
    assert (e.ids.email, e.ids.profile_id, e.ip) == ("ann@acme.com", "ko-1", "5.6.7.8")
    assert e.traits == {"plan": "pro", "role": "cto"}
    assert e.timestamp == t("2026-11-20T10:00:00Z")
    assert e.payload["$shared"] == shared


def test_koala_device_ip_wins_and_account_from_dollar_account() -> None:
    item = {
        "type": "identify",
        "message_id": "k2",
        "receivedAt": RECEIVED,
        "device_ip": "9.9.9.9",
        "traits": {"$account": {"domain": "acme.com", "name": "Acme"}},
    }
    e = normalize(1, "koala", item, {"email": "a@acme.com", "ip": "1.1.1.1"}, RULES)
    assert e.ip == "9.9.9.9"
    assert e.account is not None and e.account["domain"] == "acme.com"


def test_same_call_retried_has_the_same_content_hash_and_a_changed_one_does_not() -> None:
    a = seg({"type": "track", "event": "E", "sentAt": "2026-01-01T00:00:00Z"})
    b = seg({"type": "track", "event": "E", "sentAt": "2026-01-01T00:00:09Z"})
    c = seg({"type": "track", "event": "F"})
    assert a.content_hash == b.content_hash != c.content_hash


def test_a_call_without_message_id_or_stamp_cannot_be_normalized() -> None:
    with pytest.raises(NormalizeError) as error:
        normalize(
            1, "segment", {"type": "track", "event": "E", "receivedAt": RECEIVED}, None, RULES
        )
    assert error.value.reason == "missing_message_id"
    with pytest.raises(NormalizeError):
        normalize(1, "segment", {"type": "track", "event": "E", "messageId": "m"}, None, RULES)


def test_a_timestamp_the_skew_rule_pushes_out_of_range_is_a_normalize_error() -> None:
    with pytest.raises(NormalizeError) as error:
        seg(
            {
                "type": "track",
                "event": "E",
                "timestamp": "0001-01-01T00:00:00Z",
                "sentAt": "9999-12-31T00:00:00Z",
            }
        )
    assert error.value.reason == "invalid_timestamp"
