"""The browser rules of ingest/cors.py, pure: which origins a project's list admits, and
what a list may hold."""

from __future__ import annotations

import pytest

from ingest.cors import (
    InvalidOrigin,
    has_origin,
    is_browser_path,
    normalize_origin,
    normalize_origins,
    origin_allowed,
)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("https://WWW.Acme.com", "https://www.acme.com"),
        ("https://www.acme.com:443/", "https://www.acme.com"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        (" https://*.Acme.co.uk ", "https://*.acme.co.uk"),
        ("https://*.acme.com:8443", "https://*.acme.com:8443"),
    ],
)
def test_origins_are_stored_as_browsers_serialize_them(text: str, stored: str) -> None:
    assert normalize_origin(text) == stored


@pytest.mark.parametrize(
    "text",
    [
        "acme.com",  # no scheme
        "ftp://acme.com",
        "https://acme.com/pricing",
        "https://acme.com?x=1",
        "https://user@acme.com",
        "https://*.com",  # a wildcard over a whole top-level domain
        "https://a.*.acme.com",
        "https://*",
        "https://acme.com:99999",
        "",
    ],
)
def test_anything_but_scheme_host_port_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(InvalidOrigin, match=r"origin|wildcard"):
        normalize_origin(text)


def test_a_list_is_normalized_deduplicated_and_bounded() -> None:
    assert normalize_origins(["https://acme.com", "https://ACME.com/", "https://b.io"]) == (
        "https://acme.com",
        "https://b.io",
    )
    with pytest.raises(InvalidOrigin, match="at most"):
        normalize_origins([f"https://s{i}.acme.com" for i in range(101)])


ALLOWED = ["https://www.acme.com", "https://*.acme.io", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://www.acme.com", True),
        ("https://WWW.ACME.COM", True),
        ("http://www.acme.com", False),  # another scheme is another origin
        ("https://acme.com", False),
        ("https://www.acme.com.evil.io", False),
        ("https://docs.acme.io", True),
        ("https://a.b.acme.io", True),
        ("https://acme.io", False),  # the wildcard is for subdomains only
        ("https://evilacme.io", False),
        ("https://docs.acme.io:8443", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("null", False),  # sandboxed frames and file:// pages
    ],
)
def test_a_list_admits_its_origins_and_their_subdomain_wildcards(
    origin: str, allowed: bool
) -> None:
    assert origin_allowed(ALLOWED, origin) is allowed


def test_no_list_takes_any_origin_and_no_origin_is_not_a_browser() -> None:
    assert origin_allowed(None, "https://anyone.example")
    assert origin_allowed(ALLOWED, None)
    assert not origin_allowed([], "https://www.acme.com")


def test_only_ingestion_paths_and_requests_with_origin_get_cors() -> None:
    assert is_browser_path("/v1/t") and is_browser_path("/web/projects/pk_1/batch")
    assert not is_browser_path("/admin/projects/x/stats")
    assert not is_browser_path("/webhooks/segment/pk_1")
    assert not is_browser_path("/metrics")
    assert has_origin([(b"host", b"x"), (b"origin", b"https://a.io")])
    assert not has_origin([(b"host", b"x"), (b"authorization", b"Basic eA==")])
