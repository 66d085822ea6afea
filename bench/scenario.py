"""The end-to-end load: a realistic Segment mix, deterministic for a given seed.

70% track, 15% page, 10% identify, 3% group, 2% alias; visitors browse anonymously first
(anonymousId + the Koala profile_id cookie) and half of them identify later (userId,
email); 5% of the calls are resent with the same messageId (an SDK retry).

Companies (issue 16) are exercised as a B2B site sees them: visitors work at one of
`visitors // 30` companies; an identified visitor's email is a work email for 60% of them
(`person7@company3.co.uk`, a quarter of them from a subdomain, `eu.company3.co.uk`, under
five public suffixes), free mail or disposable for the rest (gmail.com, mailinator.com,
...). Group calls name the visitor's company by groupId with its domain or website; one
company in ten also has a second groupId (another workspace) with the same domain, so
accounts merge as in production.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

MIX = (("track", 70), ("page", 15), ("identify", 10), ("group", 3), ("alias", 2))
EVENTS = ("Viewed Pricing", "Signed Up", "Invited Teammate", "Opened Docs", "Started Trial")
VISITORS_PER_COMPANY = 30
WORK_EMAIL_PERCENT = 60  # of identified visitors; the others use free mail
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.co.uk", "icloud.com",
             "proton.me", "mailinator.com")  # fmt: skip
SUFFIXES = ("com", "io", "co.uk", "de", "com.au")
SUBDOMAINS = ("eu.", "", "", "")  # a quarter of work emails come from a subdomain


def company_of(v: int, companies: int) -> int:
    # v // 2: identified visitors are the even ones; every company gets some
    return v // 2 % companies


def company_domain(c: int) -> str:
    return f"company{c}.{SUFFIXES[c % len(SUFFIXES)]}"


def email_of(v: int, companies: int) -> str:
    """A visitor's email: a work email at its company's domain (or a subdomain of it),
    or free mail, decided by a hash of the visitor (not by its company)."""
    h = zlib.crc32(b"visitor-%d" % v)
    if h % 100 >= WORK_EMAIL_PERCENT:
        return f"person{v}@{FREE_MAIL[h // 100 % len(FREE_MAIL)]}"
    sub = SUBDOMAINS[h // 100 % len(SUBDOMAINS)]
    return f"person{v}@{sub}{company_domain(company_of(v, companies))}"


def group_of(v: int, companies: int) -> tuple[str, dict[str, Any]]:
    """The groupId and traits of a group call of visitor `v`: its company, by domain or
    website; one company in ten has a second workspace (groupId) with the same domain."""
    c = company_of(v, companies)
    domain = company_domain(c)
    group_id = f"company-{c}-ws2" if c % 10 == 0 and v % 4 == 0 else f"company-{c}"
    traits: dict[str, Any] = {"name": f"Company {c}", "employees": 10 + c % 500}
    if c % 2:
        traits["website"] = f"https://www.{domain}/"
    else:
        traits["domain"] = domain
    return group_id, traits


@dataclass
class Load:
    batches: list[bytes]  # request bodies of up to 100 calls
    calls: int
    unique: int
    duplicates: int
    visitors: int
    companies: int


def generate(
    calls: int, visitors: int, seed: int = 7, dup_share: float = 0.05, batch_size: int = 100
) -> Load:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    companies = max(1, visitors // VISITORS_PER_COMPANY)
    unique_target = int(calls * (1 - dup_share))
    out: list[dict[str, Any]] = []
    for n in range(unique_target):
        v = rng.randrange(visitors)
        identified = v % 2 == 0 and n > unique_target // 2  # half identify, later on
        kind = rng.choice(kinds)
        call: dict[str, Any] = {
            "type": kind,
            "messageId": f"bench-{seed}-{n}",
            "anonymousId": f"anon-{v}",
            "timestamp": f"2026-11-20T{n // 3_600_000 % 24:02d}:{n // 60_000 % 60:02d}:"
            f"{n // 1000 % 60:02d}.{n % 1000:03d}Z",
            "context": {
                "library": {"name": "analytics-python", "version": "2.4.0"},
                "ip": f"10.0.{v % 256}.{v // 256 % 256}",
                "userAgent": "Mozilla/5.0 (bench)",
            },
        }
        if identified:
            call["userId"] = f"user-{v}"
        if kind == "track":
            call["event"] = rng.choice(EVENTS)
            call["properties"] = {
                "profile_id": f"ko-{v}",
                "plan": rng.choice(("free", "pro")),
                "value": rng.randrange(1000),
            }
        elif kind == "page":
            call["name"] = "Pricing"
            call["properties"] = {
                "url": "https://example.com/pricing",
                "path": "/pricing",
                "profile_id": f"ko-{v}",
                "title": "Pricing",
            }
        elif kind == "identify":
            call["traits"] = {"plan": rng.choice(("free", "pro")), "seats": rng.randrange(50)}
            if identified:
                call["traits"]["email"] = email_of(v, companies)
        elif kind == "group":
            call["groupId"], call["traits"] = group_of(v, companies)
        elif kind == "alias":
            call["previousId"] = f"anon-{v}"
            call["userId"] = f"user-{v}"
        out.append(call)
    duplicates = calls - unique_target
    for _ in range(duplicates):  # SDK retries: the same call again, a little later
        index = rng.randrange(len(out))
        out.insert(min(len(out), index + rng.randrange(1, 500)), out[index])
    batches = [
        orjson.dumps({"batch": out[i : i + batch_size], "sentAt": "2026-11-20T00:00:00Z"})
        for i in range(0, len(out), batch_size)
    ]
    return Load(batches, len(out), unique_target, duplicates, visitors, companies)
