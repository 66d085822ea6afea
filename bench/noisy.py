"""`python -m bench.noisy`: is the pipeline fair under a noisy project? (issue #17)

100 projects send steadily (paced small batches, like SDKs flushing) while one project
backfills through `/v1/import` at `--burst-factor` times the steady projects' whole rate,
retrying each `429` after its `Retry-After` as Segment's libraries do. Three phases of
`--seconds` each, on one receiver and `--workers` workers:

- `quiet`: the steady projects alone (the baseline);
- `burst`: the same, with the backfill, no limits;
- `limited`: the same, with the noisy project's queued-calls limit set to `--queue-limit`
  (`projects set-limits`; 0: the receiver's capacity rule of docs/scaling.md is yours to pick).

For each phase: the steady calls' p99 time from the receiver's `200` to stored (an
event's `created_at`, its batch transaction's start, minus its `received_at`), the
backfill's calls stored and how long it took to finish, the `429`s it got. Every call
answered `200` must be stored: the run ends with each project's reconciliation.

Needs nothing (embedded servers) or DATABASE_URL / REDIS_URL like `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.run import TRACK, Env, koala, log
from ingest import redis_clients
from ingest.operations.stats import counts
from ingest.store import projects
from ingest.store.projects import Project

STEADY_PROJECTS = 100
CALLS_PER_PROJECT = 5  # each steady project's calls a second


def auth(project: Project) -> dict[str, str]:
    token = base64.b64encode(f"{project.public_key}:".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


def batch(n: int, tag: str) -> bytes:
    calls = [
        dict(TRACK, type="track", messageId=f"{tag}-{secrets.token_hex(6)}", userId=f"u-{i % 50}")
        for i in range(n)
    ]
    return orjson.dumps({"batch": calls})


async def steady(
    client: httpx.AsyncClient, project: Project, per_second: int, seconds: float
) -> int:
    """One SDK: a batch of `per_second` calls every second (started at a random offset)."""
    sent = 0
    await asyncio.sleep(secrets.randbelow(1000) / 1000)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        answer = await client.post(
            "/v1/batch", content=batch(per_second, "s"), headers=auth(project)
        )
        if answer.status_code == 200:
            sent += per_second
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return sent


async def backfill(
    client: httpx.AsyncClient, project: Project, per_second: int, seconds: float, size: int
) -> tuple[int, int]:
    """The noisy project: `per_second` calls a second for `seconds` as `size`-call
    /v1/import requests, each retried after `Retry-After` until taken. Returns calls
    taken and 429s received."""
    taken = limited = 0
    requests = per_second * int(seconds) // size

    async def one(body: bytes) -> None:
        nonlocal taken, limited
        while True:
            try:
                answer = await client.post("/v1/import", content=body, headers=auth(project))
            except httpx.TransportError:
                # a keep-alive connection closed under us: resend, as an SDK does (if the
                # first copy was taken, the second is a duplicate dedup absorbs)
                continue
            if answer.status_code == 200:
                taken += size
                return
            if answer.status_code != 429:
                raise RuntimeError(f"backfill answered {answer.status_code}: {answer.text}")
            limited += 1
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))

    # paced: per_second // size requests started each second, retries on their own
    tasks = []
    every = size / per_second
    for _ in range(requests):
        tasks.append(asyncio.create_task(one(batch(size, "b"))))
        await asyncio.sleep(every)
    await asyncio.gather(*tasks)
    return taken, limited


def p99_seconds(conn: psycopg.Connection, ids: list[int], since: float, until: float) -> float:
    row = conn.execute(
        """
        SELECT percentile_cont(0.99) WITHIN GROUP
               (ORDER BY extract(epoch FROM created_at - received_at))
        FROM events
        WHERE project_id = ANY(%s) AND received_at >= to_timestamp(%s)
          AND received_at < to_timestamp(%s)
        """,
        (ids, since, until),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else float("nan")


def stored_total(conn: psycopg.Connection, ids: list[int]) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(stored + duplicates), 0) FROM project_counters"
        " WHERE project_id = ANY(%s)",
        (ids,),
    ).fetchone()
    return int(row[0]) if row else 0


async def phase(
    url: str,
    quiet: list[Project],
    noisy: Project | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        started = time.time()
        work = [steady(client, p, args.calls_per_project, args.seconds) for p in quiet]
        burst = None
        if noisy is not None:
            rate = args.burst_factor * args.calls_per_project * len(quiet)
            burst = asyncio.create_task(
                backfill(client, noisy, rate, args.seconds, args.import_size)
            )
        sent = sum(await asyncio.gather(*work))
        ended = time.time()
        taken, limited = await burst if burst is not None else (0, 0)
        burst_done = time.time() - started
    return {
        "since": started,
        "until": ended,
        "steady_calls": sent,
        "burst_calls": taken,
        "burst_429": limited,
        "burst_seconds": burst_done if noisy is not None else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        env = Env(stack, Path(tempfile.mkdtemp(prefix="koala-noisy-")))
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            quiet = [projects.create(conn, f"steady-{i}") for i in range(STEADY_PROJECTS)]
            noisy = projects.create(conn, "noisy")
        for i in range(args.workers):
            env.spawn(koala("worker", "--concurrency", "1", "--hostname", f"noisy{i}@%h"), f"w{i}")
        _, port = env.serve(koala("web"), "web", KOALA_KEY_CACHE_SECONDS="1")
        url = f"http://127.0.0.1:{port}"
        ids = [p.id for p in quiet]
        out: dict[str, Any] = {}
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            # warm: the workers are up and have stored a call (else the first phase
            # measures their start)
            answer = httpx.post(url + "/v1/batch", content=batch(1, "w"), headers=auth(quiet[0]))
            assert answer.status_code == 200, answer.text
            while stored_total(conn, ids) < 1:
                time.sleep(0.2)
            for name, sender in (("quiet", None), ("burst", noisy), ("limited", noisy)):
                if name == "limited":
                    projects.set_limits(conn, noisy.name, None, args.queue_limit)
                    time.sleep(2)  # the receiver's key cache: 1 s
                log(f"phase {name}")
                result = asyncio.run(phase(url, quiet, sender, args))
                target = stored_total(conn, [*ids, noisy.id])
                expected = 1 + sum(
                    r["steady_calls"] + r["burst_calls"] for r in [*out.values(), result]
                )
                deadline = time.monotonic() + 600
                while target < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
                    target = stored_total(conn, [*ids, noisy.id])
                result["drained_seconds"] = time.time() - result["since"]
                result["steady_p99_s"] = p99_seconds(conn, ids, result["since"], result["until"])
                out[name] = result
                log(f"  {name}: {result}")
            client = redis_clients.sync_client(env.redis_url)
            received = client.hgetall(env.prefix + "received")
            unreconciled = []
            for p in [*quiet, noisy]:
                stats = counts(conn, p, int(received.get(str(p.id).encode(), 0)))
                if stats.in_flight != 0 or stats.received != stats.stored + stats.duplicates:
                    unreconciled.append(stats.model_dump())
            out["reconciled"] = not unreconciled
            out["unreconciled"] = unreconciled[:3]
        base = out["quiet"]["steady_p99_s"]
        for name in ("burst", "limited"):
            out[name]["steady_p99_vs_quiet"] = out[name]["steady_p99_s"] / base
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--calls-per-project",
        type=int,
        default=CALLS_PER_PROJECT,
        help="each steady project, per s",
    )
    parser.add_argument("--burst-factor", type=float, default=10)
    parser.add_argument("--import-size", type=int, default=500, help="calls per /v1/import")
    parser.add_argument("--queue-limit", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = run(args)
    for name in ("quiet", "burst", "limited"):
        r = out[name]
        ratio = r.get("steady_p99_vs_quiet")
        print(
            f"{name:8} steady p99 {r['steady_p99_s'] * 1000:8.0f} ms"
            + (f" ({ratio:.2f}x quiet)" if ratio else "")
            + f"; backfill {r['burst_calls']} calls, {r['burst_429']} x 429,"
            f" drained {r['drained_seconds']:.1f} s"
        )
    print("reconciled" if out["reconciled"] else f"NOT reconciled: {out['unreconciled']}")
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    return 0 if out["reconciled"] else 1


if __name__ == "__main__":
    sys.exit(main())
