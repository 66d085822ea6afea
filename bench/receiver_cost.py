"""`python -m bench.receiver_cost`: what one request costs the receiver's own code.

The receiver app is driven in process (no HTTP server, no load generator): 32 concurrent
clients send `/v1/track` calls (or 100-call `/v1/batch` requests with `--batch`) through
the real ASGI app into a real Redis, so only the app's work is measured.

On these shared 2-core machines throughput figures of the same code drift by 20% from
one minute to the next, too much to see a 5% change. `--callgrind` runs the same load
twice under valgrind's callgrind (N and 5N requests) and reports the difference in
instructions per request: repeatable to a fraction of a percent, whatever else the
machine does. bench/README.md records what each receiver optimization bought this way.

Needs DATABASE_URL (a migrated database: a scratch project is created in it) and REDIS_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from ingest import redis_clients
from ingest.config import Settings
from ingest.receiver import FastPath, create_app
from ingest.store import projects

CLIENTS = 32
PREFIX = "receiver-cost:"


def bodies(n: int, batch: bool) -> tuple[str, list[bytes]]:
    call = {"userId": "u-1", "event": "Viewed Pricing", "properties": {"plan": "pro"}}
    if not batch:
        return "/v1/track", [orjson.dumps(dict(call, messageId=f"m-{i}")) for i in range(n)]
    return "/v1/batch", [
        orjson.dumps(
            {"batch": [dict(call, type="track", messageId=f"m-{i}-{j}") for j in range(100)]}
        )
        for i in range(n)
    ]


async def drive(app: FastPath, path: str, load: list[bytes], auth: bytes) -> float:
    """Send every body through the app with CLIENTS concurrent clients; seconds taken."""
    statuses: list[int] = []

    async def one(body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [
                (b"host", b"bench"),
                (b"authorization", auth),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "query_string": b"",
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    pending = list(reversed(load))

    async def client() -> None:
        while pending:
            await one(pending.pop())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    seconds = time.perf_counter() - started
    if set(statuses) != {200}:
        raise SystemExit(f"the receiver answered {sorted(set(statuses))}, not only 200")
    return seconds


async def run(n: int, batch: bool, limits: bool = False) -> float:
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        project = projects.create(conn, f"receiver-cost-{secrets.token_hex(3)}")
    auth = b"Basic " + base64.b64encode(f"{project.public_key}:".encode())
    # field names: the KOALA_ names are for the environment, and as keyword arguments
    # they were silently dropped, so this tool wrote into the default queue and keys
    # --limits: per-project limits on, never reached, so every call pays for the check
    limited = {"project_rate_limit": 10**7, "project_queue_limit": 10**9} if limits else {}
    settings = Settings(
        queue_name="receiver-cost", redis_key_prefix=PREFIX, queue_max_depth=10**9, **limited
    )
    assert settings.queue_key == PREFIX + "receiver-cost", settings.queue_key
    app = create_app(settings)
    path, load = bodies(n, batch)
    async with app.app.router.lifespan_context(app.app):
        while not app.state.receiver.keys.loaded:
            await asyncio.sleep(0.05)
        # warm (imports, caches): 200 requests; 20 of 100 calls (a warm-up of 20,000
        # calls made each callgrind run of --batch take minutes)
        await drive(app, path, bodies(20 if batch else 200, batch)[1], auth)
        return await drive(app, path, load, auth)


def clean() -> None:
    client = redis_clients.sync_client(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=PREFIX + "*", count=1000):
        client.delete(key)


def instructions(n: int, batch: bool, limits: bool = False) -> int:
    """Instructions callgrind counts for a whole run of this module with `n` requests."""
    out = Path(tempfile.mkdtemp()) / "callgrind.out"
    argv = [sys.executable, "-m", "bench.receiver_cost", "--requests", str(n)]
    argv += ["--batch"] if batch else []
    argv += ["--limits"] if limits else []
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if not found:
        raise SystemExit("callgrind printed no instruction count:\n" + done.stderr[-2000:])
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--batch", action="store_true", help="100-call /v1/batch requests")
    parser.add_argument(
        "--limits",
        action="store_true",
        help="per-project limits on (never reached): what their check costs",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per request under callgrind (N and 5N requests, the difference)",
    )
    args = parser.parse_args(argv)
    unit = "call" if not args.batch else "100-call request"
    if args.callgrind:
        if not shutil.which("valgrind"):
            raise SystemExit("valgrind is not installed")
        # a batch request is 100 calls: 20 and 100 of them are plenty (--requests 200)
        small = max(20 if args.batch else 100, args.requests // 10)
        low = instructions(small, args.batch, args.limits)
        high = instructions(5 * small, args.batch, args.limits)
        print(f"{(high - low) / (4 * small):,.0f} instructions per {unit} (callgrind)")
        return 0
    try:
        seconds = asyncio.run(run(args.requests, args.batch, args.limits))
    finally:
        clean()
    per = 1e6 * seconds / args.requests
    print(f"{args.requests / seconds:,.0f} requests/s in process; {per:.1f} us per {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
