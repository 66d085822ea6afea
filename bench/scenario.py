"""The end-to-end load: a realistic Segment mix, deterministic for a given seed.

70% track, 15% page, 10% identify, 3% group, 2% alias; visitors browse anonymously first
(anonymousId + the Koala profile_id cookie) and half of them identify later (userId,
email); 5% of the calls are resent with the same messageId (an SDK retry).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

MIX = (("track", 70), ("page", 15), ("identify", 10), ("group", 3), ("alias", 2))
EVENTS = ("Viewed Pricing", "Signed Up", "Invited Teammate", "Opened Docs", "Started Trial")


@dataclass
class Load:
    batches: list[bytes]  # request bodies of up to 100 calls
    calls: int
    unique: int
    duplicates: int
    visitors: int


def generate(
    calls: int, visitors: int, seed: int = 7, dup_share: float = 0.05, batch_size: int = 100
) -> Load:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
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
                call["traits"]["email"] = f"person{v}@company{v % 997}.com"
        elif kind == "group":
            call["groupId"] = f"company-{v % 997}"
            call["traits"] = {"name": f"Company {v % 997}", "domain": f"company{v % 997}.com"}
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
    return Load(batches, len(out), unique_target, duplicates, visitors)
