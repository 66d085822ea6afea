"""`koala-ingest up`: the whole pipeline on embedded servers, supervised, stopped cleanly,
and owning what it starts: no process outlives it, whatever stops it (issue #13)."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
from conftest import wait_for

from ingest.embedded import free_port


def _up_env(port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(PORT=str(port), KOALA_REDIS_KEY_PREFIX="koala:", PYTHONUNBUFFERED="1", **extra)
    return env


def _start_up(cwd: Path, port: int, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = _up_env(port, **extra)
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


def _welcome(log: Path) -> tuple[str, str]:
    out = log.read_text()
    key = re.search(r"public key \(Segment write key\): (pk_\w+)", out)
    database_url = re.search(r"PostgreSQL\s+(postgresql://\S+)", out)
    assert key and database_url, out
    return key[1], database_url[1]


def _sign_in_as_printed(log: Path, url: str) -> None:
    """The console's address and the command for a token, as `up` prints them, work: the
    token signs in to the console."""
    out = log.read_text()
    assert f"{url}/console" in out
    found = re.search(r"DATABASE_URL=(\S+) \\\n\s+(\S+) tokens create me --role operator", out)
    assert found, out
    made = subprocess.run(
        [found[2], "tokens", "create", "me", "--role", "operator"],
        env={**os.environ, "DATABASE_URL": found[1]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    token = next(line for line in made.stdout.splitlines() if line.startswith("kt_"))
    signed = httpx.post(url + "/console/login", data={"token": token})
    assert signed.status_code == 303 and "koala_console=" in signed.headers["set-cookie"]


def _stored(database_url: str, message_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE message_id = %s", (message_id,))
        return int(row.fetchone()[0])  # type: ignore[index]


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone meanwhile (a short-lived backend)
        return ""


def _stack(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """Every process `up` started, children of children included (PostgreSQL's backends,
    the worker's pool), recorded while `up` runs, once all of them are there."""
    roles = ("bin/postgres -D", "postgres: checkpointer", "valkey-server", "ingest worker",
             "ingest beat", "ingest web")  # fmt: skip

    def complete() -> list[psutil.Process] | None:
        stack = psutil.Process(proc.pid).children(recursive=True)
        lines = [_cmdline(p) for p in stack]
        workers = sum("ingest worker" in line for line in lines)  # master + pool process
        if all(any(r in line for line in lines) for r in roles) and workers == 2:
            return stack
        return None

    return wait_for(complete, timeout=30)  # type: ignore[return-value]


def _left(stack: list[psutil.Process]) -> list[str]:
    left = []
    for process in stack:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {_cmdline(process)}")
        except psutil.NoSuchProcess:
            pass
    return left


@pytest.mark.slow
def test_sigkill_of_up_leaves_no_process_behind_and_the_next_up_keeps_the_data(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    proc = _start_up(tmp_path, port, log)
    try:
        _wait_ready(url, proc, log)
        key, database_url = _welcome(log)
        sent = httpx.post(
            url + "/v1/track",
            auth=(key, ""),
            json={"userId": "u1", "event": "Signed Up", "messageId": "kill-1"},
        )
        assert sent.status_code == 200
        wait_for(lambda: _stored(database_url, "kill-1"), timeout=30)
        _sign_in_as_printed(log, url)

        # While it runs, a second `up` on the same folder (another port) refuses in one line.
        second = subprocess.run(
            [sys.executable, "-m", "ingest", "up"],
            cwd=tmp_path,
            env=_up_env(free_port()),
            capture_output=True,
            timeout=60,
        )
        said = (second.stdout + second.stderr).decode().strip().splitlines()
        assert second.returncode != 0
        assert len(said) == 1, said
        assert said[0].startswith("koala-ingest: ")
        assert str(tmp_path / ".koala-ingest") in said[0] and f"PID {proc.pid}" in said[0]

        stack = _stack(proc)
        proc.kill()
        killed = time.monotonic()
        wait_for(lambda: not _left(stack), timeout=30, interval=0.1)
        print(f"SIGKILL of up -> last process gone: {time.monotonic() - killed:.1f}s")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    # PostgreSQL shut down by itself (no stale postmaster.pid, no shared memory in use):
    # the next `up` in the same folder starts, with the same data and the same key.
    assert not (tmp_path / ".koala-ingest" / "postgres" / "postmaster.pid").exists()
    log2 = tmp_path / "up2.log"
    proc = _start_up(tmp_path, port, log2)
    try:
        _wait_ready(url, proc, log2)
        assert _welcome(log2)[0] == key
        assert _stored(database_url, "kill-1") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sighup_stops_up_cleanly_and_the_receiver_under_load_mid_request_within_its_grace(
    tmp_path: Path,
) -> None:
    drain = 2  # KOALA_WEB_DRAIN_SECONDS; up's grace for the receiver is drain + 10
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    proc = _start_up(tmp_path, port, log, KOALA_WEB_DRAIN_SECONDS=str(drain))
    answered: list[int] = []
    done = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, auth=(key, ""), timeout=5) as client:
            n = 0
            while not done.is_set():
                n += 1
                try:
                    answer = client.post("/v1/track", json={"userId": "u", "event": f"e{n}"})
                    answered.append(answer.status_code)
                except httpx.HTTPError:
                    time.sleep(0.05)

    threads: list[threading.Thread] = []
    try:
        _wait_ready(url, proc, log)
        key, _ = _welcome(log)
        stack = _stack(proc)
        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answered) > 50, timeout=30)
        # A request in progress: headers sent, its body never completes.
        slow = socket.create_connection(("127.0.0.1", port))
        auth = base64.b64encode(f"{key}:".encode()).decode()
        slow.sendall(
            f"POST /v1/track HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        time.sleep(0.5)

        proc.send_signal(signal.SIGHUP)
        hung_up = time.monotonic()
        web_stopped = None
        while proc.poll() is None and time.monotonic() - hung_up < 90:
            if web_stopped is None and "up       | web stopped" in log.read_text():
                web_stopped = time.monotonic() - hung_up
            time.sleep(0.05)
        exited = time.monotonic() - hung_up
        print(f"SIGHUP -> receiver stopped {web_stopped}s, up exited {exited:.1f}s")
        assert proc.returncode == 0, log.read_text()[-3000:]
        out = log.read_text()
        assert "received SIGHUP, stopping" in out
        # The receiver stopped by itself: it cancelled the request in progress after its
        # drain time; up never had to kill it, nor anything else.
        assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in out, out[-3000:]
        assert "did not stop" not in out
        assert web_stopped is not None and web_stopped < drain + 10
        assert len(answered) > 50 and set(answered) <= {200, 503}, set(answered)
        time.sleep(0.5)
        assert not _left(stack)
        slow.close()
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_closing_the_terminal_running_up_stops_the_stack_and_up_exits_0(tmp_path: Path) -> None:
    # A real terminal: up is the session leader on a pseudo-terminal; closing the master
    # side (the window) sends SIGHUP, and every later write to the terminal fails with EIO.
    import fcntl
    import select
    import termios

    master, slave = os.openpty()

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest", "up", "--workers", "1"],
        cwd=tmp_path,
        env=_up_env(free_port()),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    try:
        shown = b""
        deadline = time.monotonic() + 90
        while b"Ctrl-C stops everything" not in shown:
            assert time.monotonic() < deadline and proc.poll() is None, shown.decode()
            if select.select([master], [], [], 0.5)[0]:
                shown += os.read(master, 65536)
        stack = _stack(proc)
        os.close(master)
        master = -1
        closed = time.monotonic()
        assert proc.wait(90) == 0
        print(f"terminal closed -> up exited: {time.monotonic() - closed:.1f}s")
        wait_for(lambda: not _left(stack), timeout=10)
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_up_refuses_a_port_in_use_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as other:  # another program on PORT
        other.bind(("0.0.0.0", 0))
        other.listen()
        port = other.getsockname()[1]
        refused = subprocess.run(
            [sys.executable, "-m", "ingest", "up"],
            cwd=tmp_path,
            env=_up_env(port),
            capture_output=True,
            timeout=60,
        )
    said = (refused.stdout + refused.stderr).decode().strip().splitlines()
    assert refused.returncode != 0
    assert len(said) == 1, said
    assert said[0].startswith("koala-ingest: port ") and str(port) in said[0]
    assert not (tmp_path / ".koala-ingest" / "postgres").exists()
    assert not (tmp_path / ".koala-ingest" / "redis").exists()


HANGING_APP = """
import logging, sys, time
from ingest.commands.processes import serve

logging.basicConfig(level=logging.INFO)

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            print("started", flush=True)
        else:
            time.sleep(3600)  # a shutdown stuck in a blocking call: not even cancellable

serve(app, "127.0.0.1", int(sys.argv[1]), drain_seconds=1)
"""


def test_a_receiver_whose_lifespan_shutdown_hangs_still_exits_after_drain_plus_five_seconds(
    tmp_path: Path,
) -> None:
    # uvicorn waits for the application's shutdown with no limit (the hang seen in #13).
    log = tmp_path / "web.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_APP, str(free_port())],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "started" in log.read_text(), timeout=30)
        proc.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        assert proc.wait(30) == 1
        took = time.monotonic() - asked
        assert 1 + 5 <= took < 1 + 5 + 3, took
        out = log.read_text()
        assert "Waiting for application shutdown." in out
        assert "the receiver did not stop in 6s; exiting" in out
    finally:
        if proc.poll() is None:
            proc.kill()
