"""schemathesis, driven by our own `/openapi.json`, against a running receiver and admin
API with a worker behind them: no `5xx`, no unhandled exception in the logs, and the
projects' reconciliation exact afterwards (issue #13 found five kinds of 500 this way).

The default run is bounded (`KOALA_FUZZ_API_REQUESTS`, 600 generated requests spread
over the operations); the large run is the same test with a larger figure, and adds
schemathesis's coverage phase:

    KOALA_FUZZ_API_REQUESTS=12000 .venv/bin/pytest tests/test_fuzz_api.py

Requests go to a real project half of the time (its write key, its name), so they reach
the parsers and the queries rather than stopping at `401`/`404`; negative data
(wrong types, missing fields, NULs) is generated beside positive.
"""

from __future__ import annotations

import base64
import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from conftest import Proc, Receiver, Servers, reconciled, start_receiver, start_worker, wait_for
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from ingest.api import openapi
from ingest.store import projects
from ingest.store.projects import Project

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
REQUESTS = int(os.environ.get("KOALA_FUZZ_API_REQUESTS", "600"))

schema = schemathesis.openapi.from_dict(openapi.build())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True
)
# schemathesis's coverage phase (every boundary and wrong type of every parameter, some
# 5,000 requests here) runs in the large run only: the default run stays near its figure
schema.config.phases.coverage.enabled = REQUESTS >= 10_000
OPERATIONS = sum(1 for result in schema.get_all_operations() if result.ok())
PER_OPERATION = max(1, math.ceil(REQUESTS / OPERATIONS))
SENT: Counter[str] = Counter()  # answers by status class, over the whole module
STARTED = time.monotonic()


class Fuzzed:
    def __init__(self, rx: Receiver, worker: Proc, project: Project) -> None:
        self.rx = rx
        self.worker = worker
        self.project = project


@pytest.fixture(scope="module")
def fuzzed(servers: Servers, tmp_path_factory: pytest.TempPathFactory, db: Any) -> Iterator[Fuzzed]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-api")
    with psycopg.connect(servers.database_url, autocommit=True) as conn:
        project = projects.create(conn, f"fuzz-{os.getpid()}")
    rx = start_receiver(servers, tmp, ADMIN_TOKEN=TOKEN)
    worker = start_worker(servers, tmp, name="fuzz")
    yield Fuzzed(rx, worker, project)
    worker.stop()
    rx.proc.stop()


@pytest.fixture(scope="module")
def db(servers: Servers) -> Any:  # module scope: the fixture above lives that long
    return None


# Aimed at the real project, these would end the run's ability to send to it (a revoked
# project, a rotated key): they get generated names, and answer 404.
ENDS_THE_PROJECT = {
    ("DELETE", "/admin/projects/{name}"),
    ("POST", "/admin/projects/{name}/rotate-key"),
}


def _aimed(case: schemathesis.Case, project: Project) -> bool:
    """Half of the cases, chosen by their content, go to the real project."""
    if (case.method.upper(), case.path) in ENDS_THE_PROJECT:
        return False
    return zlib.crc32(repr(case.path_parameters).encode()) % 2 == 0


@schema.parametrize()
@settings(
    max_examples=PER_OPERATION,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_never_get_a_server_error(
    case: schemathesis.Case, fuzzed: Fuzzed
) -> None:
    project = fuzzed.project
    headers: dict[str, str] = {}
    if _aimed(case, project):
        params = case.path_parameters or {}
        if "name" in params:
            params["name"] = project.name
        if "public_key" in params:
            params["public_key"] = project.public_key
        if case.path.startswith("/admin"):
            headers["Authorization"] = f"Bearer {TOKEN}"
        elif case.path.startswith("/v1"):
            key = base64.b64encode(f"{project.public_key}:".encode()).decode()
            headers["Authorization"] = f"Basic {key}"
    response = case.call(base_url=fuzzed.rx.url, headers=headers, timeout=30)
    SENT[f"{response.status_code // 100}xx"] += 1
    SENT["total"] += 1
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code >= 400:
        body = response.json()  # our errors, uvicorn's limits included, are JSON
        assert {"code", "message"} <= set(body), (case.path, body)


def test_after_the_fuzzing_the_logs_are_clean_and_the_counts_reconcile(fuzzed: Fuzzed) -> None:
    """Every call the fuzzer got accepted is stored, a duplicate, rejected or
    dead-lettered, and nothing was an unhandled exception."""
    assert SENT["total"] >= REQUESTS * 0.9, SENT

    def settled() -> dict[str, Any] | None:
        stats = httpx.get(
            fuzzed.rx.url + f"/admin/projects/{fuzzed.project.name}/stats",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).json()
        return stats if stats["in_flight"] == 0 else None

    stats: Any = wait_for(settled, timeout=120, interval=0.5)
    assert reconciled(stats), stats
    for proc in (fuzzed.rx.proc, fuzzed.worker):
        output = proc.output()
        assert "Traceback" not in output, output[-3000:]
        assert "Exception in ASGI application" not in output
    print(
        f"\nschemathesis: {SENT['total']} requests over {OPERATIONS} operations in"
        f" {time.monotonic() - STARTED:.0f} s; {dict(SENT)}; project {stats}"
    )
