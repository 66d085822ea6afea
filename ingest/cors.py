"""Browsers: CORS on the ingestion paths, and each project's allowed origins. Pure rules.

A page on `www.acme.com` posting to koala-ingest makes cross-origin requests. Segment's
Analytics 2.0 (`@segment/analytics-next` 1.84) sends every call with `fetch` and an
`Authorization: Basic` header (plus `X-Retry-Count` on retries), so Chromium first sends a
preflight `OPTIONS`; without `Access-Control-Allow-Origin` on the preflight and on the
answer, the browser blocks the call and analytics.js logs "Error sending event": nothing
reaches us (issue #12, reproduced by tests/test_browser.py before this module existed).

What the ingestion paths answer a browser (Starlette's `CORSMiddleware` does the work,
`OPTIONS` included, without touching Redis or PostgreSQL; `CORS` below is its setup):
- any origin, reflected with `Access-Control-Allow-Credentials: true`: a page may fetch with
  `credentials: "include"`, where a `*` is refused by the browser. The preflight carries no
  write key (only the names of the headers), so it cannot be judged per project: the
  project's own rule is applied to the call itself (`origin_allowed`);
- the headers it asks for (analytics.js lets a site add its own), `POST` and `GET`;
- `Retry-After` exposed, so analytics.js can read a `429`'s delay (it reads the header only
  through the Fetch API, where an unexposed header is `null`);
- the preflight cached for `MAX_AGE` seconds (Chromium caps it at 2 hours, Firefox at 24).
Errors carry the same headers: a browser that cannot read a `503` cannot tell it from a
network failure, and a `4xx` it can read is one analytics.js stops retrying.

The admin API, `/metrics` and the probes are not opened to other origins. Webhooks are
server-to-server (Segment signs them), so their path is not opened either.

Allowed origins: a write key is public (it ships in every page that uses it), so anyone may
send with it from their own site. A project can name the origins it sends from; a call whose
`Origin` is not among them is refused (`403 origin_not_allowed`, recorded as a rejection).
Browsers always send `Origin` on a `POST`, beacons included, and scripts cannot forge it; a
program outside a browser can, so this keeps other sites' visitors out, not a determined
sender. Calls without `Origin` (server-side SDKs, Segment's cloud) are never refused by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

MAX_AGE = 7200
BROWSER_PATH_PREFIXES = ("/v1/", "/web/projects/")

CORS: dict[str, Any] = {
    "allow_origins": ["*"],
    "allow_credentials": True,
    "allow_methods": ["POST", "GET"],
    "allow_headers": ["*"],
    "expose_headers": ["Retry-After"],
    # a public site's page may send to a collector on a private address (Chromium's Private
    # Network Access asks first): a collector is meant to be reached from any page
    "allow_private_network": True,
    "max_age": MAX_AGE,
}

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ORIGINS = 100


class InvalidOrigin(ValueError):
    """An allowed-origin pattern that is not `scheme://host[:port]`."""


def is_browser_path(path: str) -> bool:
    return path.startswith(BROWSER_PATH_PREFIXES)


def has_origin(raw_headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether an ASGI header list has `Origin`: only browsers' requests pay for CORS.
    (A plain loop: this runs on every `/v1` request, and a generator costs more.)"""
    for name, _ in raw_headers:  # noqa: SIM110 - see the docstring
        if name == b"origin":
            return True
    return False


def normalize_origin(text: str) -> str:
    """`https://WWW.Acme.com:443/` -> `https://www.acme.com`; `https://*.acme.com` stays a
    pattern for every subdomain. Raises InvalidOrigin with the reason."""
    value = text.strip()
    if any(c <= " " or c == "\x7f" for c in value):  # a NUL would not even reach the table
        raise InvalidOrigin(f"{text!r}: an origin has no spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise InvalidOrigin(f"{text!r} is not an origin: {error}") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidOrigin(f"{text!r}: an origin starts with http:// or https://")
    if not host or parts.username or parts.password:
        raise InvalidOrigin(f"{text!r}: an origin is scheme://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidOrigin(f"{text!r}: an origin has no path, query or fragment")
    wildcard = host.startswith("*.")
    bare = host[2:] if wildcard else host
    if not bare or "*" in bare or (wildcard and "." not in bare):
        raise InvalidOrigin(f"{text!r}: a wildcard stands for subdomains (https://*.acme.com)")
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}"


def normalize_origins(texts: Sequence[str]) -> tuple[str, ...]:
    """A project's list, each normalized, duplicates dropped, order kept."""
    if len(texts) > MAX_ORIGINS:
        raise InvalidOrigin(f"at most {MAX_ORIGINS} allowed origins")
    return tuple(dict.fromkeys(normalize_origin(t) for t in texts))


def origin_allowed(allowed: Sequence[str] | None, origin: str | None) -> bool:
    """Whether a call with this `Origin` header may be taken for a project.

    `allowed` None: any origin (the default, as Segment's API). No `Origin`: not a browser.
    Browsers serialize `Origin` lowercase without a default port, as `normalize_origin`
    stores the patterns, so the comparison is on strings."""
    if allowed is None or origin is None:
        return True
    origin = origin.strip().lower()
    return any(origin == pattern or _subdomain_of(origin, pattern) for pattern in allowed)


def _subdomain_of(origin: str, pattern: str) -> bool:
    """`https://*.acme.com` matches `https://x.acme.com` and `https://a.b.acme.com` (not
    `https://acme.com`: list both when both send)."""
    scheme, wildcard, rest = pattern.partition("://*.")
    return bool(wildcard) and origin.startswith(scheme + "://") and origin.endswith("." + rest)
