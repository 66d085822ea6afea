"""`python -m bench.batch_profile`: where a worker's batch spends its time, statement by
statement, without Celery, Redis or a load generator in the way.

The end-to-end benchmark's load (`bench/scenario.py`: the same mix, visitors and
duplicates) is cut into worker batches and applied in process, exactly as a worker does
(`workers.batch.run`: the batch claim, then `pipeline.process` in the batch's one
transaction). Every statement is timed three ways: wall time seen by the client, the CPU
the worker spent on it (psycopg's work: parameters, results), and the CPU its PostgreSQL
backend spent on it (the backend's `/proc/PID/schedstat`, nanoseconds:
pg_stat_statements needs `shared_preload_libraries`, which a shared server may not
have). Statements are named by the store function that ran them. The batch commit is
timed the same way.

`--explain N` also prints `EXPLAIN (ANALYZE, BUFFERS)` of each statement of batch N
(each run in a savepoint that is rolled back, then the statement for real);
`--cprofile` prints the worker's Python profile, heaviest functions first.

Needs DATABASE_URL (a server on this machine: a scratch database is created and dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import secrets
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.scenario import generate
from ingest import embedded
from ingest.config import Settings
from ingest.identifiers import Rules
from ingest.message import QueuedRequest
from ingest.store import projects
from ingest.wire import parse_segment
from workers import batch as worker_batch

RECEIVED = "2026-11-20T00:00:01.000Z"


class Meter:
    """Wall and backend CPU nanoseconds per statement kind."""

    def __init__(self) -> None:
        self.wall: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, int] = defaultdict(int)
        self.own: dict[str, int] = defaultdict(int)  # this process's CPU (the worker's)
        self.count: dict[str, int] = defaultdict(int)
        self.stat: Path | None = None
        self.explain = False
        self.plans: list[tuple[str, str]] = []

    def backend_ns(self) -> int:
        assert self.stat is not None
        return int(self.stat.read_text().split()[0])

    @contextlib.contextmanager
    def timed(self, name: str) -> Any:
        wall, cpu, own = time.perf_counter_ns(), self.backend_ns(), time.process_time_ns()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter_ns() - wall
            self.own[name] += time.process_time_ns() - own
            self.cpu[name] += self.backend_ns() - cpu
            self.count[name] += 1


METER = Meter()


def caller() -> str:
    """The store or worker function that ran the statement."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith(("ingest.", "workers.")):
            return f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


class TimedCursor(psycopg.Cursor[Any]):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        name = caller()
        if METER.explain and isinstance(query, str) and query.lstrip()[:6].upper() != "COPY":
            with self.connection.transaction(force_rollback=True):
                super().execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params, **kwargs)
                plan = "\n".join(r[0] for r in super().fetchall())
            METER.plans.append((name, plan))
        with METER.timed(name):
            return super().execute(query, params, **kwargs)

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        with METER.timed(caller()), super().copy(statement, params, **kwargs) as copy:
            yield copy


def requests_of(project_id: int, bodies: list[bytes]) -> list[QueuedRequest]:
    """The messages the receiver queues for these `/v1/batch` bodies."""
    out = []
    for body in bodies:
        parsed = parse_segment(
            orjson.loads(body),
            None,
            raw=body,
            max_call_bytes=1 << 20,
            max_batch_calls=1000,
            received_at=RECEIVED,
        )
        out.append(QueuedRequest(project_id, "segment", RECEIVED, parsed.calls))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60_000)
    parser.add_argument("--visitors", type=int, default=6_000)
    parser.add_argument("--batch-calls", type=int, default=1000, help="calls per worker batch")
    parser.add_argument("--explain", type=int, default=None, metavar="N")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    url = os.environ["DATABASE_URL"]
    settings = Settings()
    rules = Rules.of(settings)
    load = generate(args.calls, args.visitors)
    per_batch = max(1, args.batch_calls // 100)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        found = embedded.servers(
            stack,
            tmp,
            f"koala_profile_{secrets.token_hex(3)}",
            database_url=url,
            redis_url=os.environ.get("REDIS_URL"),
        )
        conn = stack.enter_context(
            psycopg.connect(found.database_url, autocommit=True, cursor_factory=TimedCursor)
        )
        METER.stat = Path(f"/proc/{conn.info.backend_pid}/schedstat")
        project = projects.create(conn, "profile")
        requests = requests_of(project.id, load.batches)
        for table in (METER.wall, METER.cpu, METER.own, METER.count):
            table.clear()
        profiler = cProfile.Profile() if args.cprofile else None
        start = time.perf_counter()
        batches = 0
        for n, i in enumerate(range(0, len(requests), per_batch)):
            METER.explain = n == args.explain
            if profiler:
                profiler.enable()
            with METER.timed("(whole batch, commit included)"):
                worker_batch.run(conn, f"profile-{i}", requests[i : i + per_batch], rules, 60_000)
            if profiler:
                profiler.disable()
            batches += 1
        elapsed = time.perf_counter() - start
        stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]  # type: ignore[index]
    calls = load.calls
    print(
        f"{calls:,} calls ({stored:,} stored) in {batches} batches of up to {args.batch_calls}"
        f" calls: {elapsed:.1f} s, {elapsed / calls * 1e6:.0f} us wall per call"
    )
    print(
        f"{'statement (caller)':44} {'runs':>6} {'wall us/call':>12} {'pg cpu us/call':>14}"
        f" {'worker cpu us/call':>18}"
    )
    whole = "(whole batch, commit included)"
    for name in sorted(METER.wall, key=lambda k: (k == whole, -METER.cpu[k])):
        print(
            f"{name:44} {METER.count[name]:>6} {METER.wall[name] / calls / 1e3:>12.1f}"
            f" {METER.cpu[name] / calls / 1e3:>14.1f} {METER.own[name] / calls / 1e3:>18.1f}"
        )
    for name, plan in METER.plans:
        print(f"\n== {name}\n{plan}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
