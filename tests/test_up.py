"""`koala-ingest up`: the whole pipeline on embedded servers, supervised, stopped cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from conftest import wait_for

from ingest.embedded import free_port


def _start_up(cwd: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PORT=str(port), KOALA_REDIS_KEY_PREFIX="koala:", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", "up", "--workers", "1"],
        cwd=cwd,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=90, interval=0.3)


def _role(up: psutil.Process, role: str) -> psutil.Process | None:
    for child in up.children():
        if role in " ".join(child.cmdline()):
            return child
    return None


@pytest.mark.slow
def test_up_runs_the_pipeline_on_embedded_servers_restarts_children_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    proc = _start_up(tmp_path, port, log)
    try:
        _wait_ready(url, proc, log)
        out = log.read_text()
        key = re.search(r"public key \(Segment write key\): (pk_\w+)", out)
        database_url = re.search(r"PostgreSQL\s+(postgresql://\S+)", out)
        assert key and database_url, out
        assert f"curl -u '{key[1]}:'" in out

        sent = httpx.post(
            url + "/v1/track",
            auth=(key[1], ""),
            json={"userId": "u1", "event": "Signed Up", "messageId": "up-1"},
        )
        assert sent.status_code == 200

        def stored() -> int:
            with psycopg.connect(database_url[1]) as conn:
                row = conn.execute("SELECT count(*) FROM events WHERE message_id = 'up-1'")
                return int(row.fetchone()[0])  # type: ignore[index]

        wait_for(stored, timeout=30)

        up = psutil.Process(proc.pid)
        worker = _role(up, "ingest worker")
        assert worker is not None, [c.cmdline() for c in up.children()]
        worker.kill()
        wait_for(lambda: "worker exited with" in log.read_text(), timeout=10)
        replacement = wait_for(
            lambda: (w := _role(up, "ingest worker")) and w.pid != worker.pid and w, timeout=20
        )
        assert replacement

        children = up.children()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
        time.sleep(0.5)
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
        assert "postgres stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()

    # A second start keeps the data and the demo project's key.
    log2 = tmp_path / "up2.log"
    proc = _start_up(tmp_path, port, log2)
    try:
        _wait_ready(url, proc, log2)
        assert key[1] in log2.read_text()
        assert stored() == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
