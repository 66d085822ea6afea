"""Scaling out and rolling restarts: two receivers and two workers on one Redis and one
PostgreSQL, each restarted with SIGTERM (as systemd, Kubernetes and `up` stop them)
while calls keep coming. Every call a receiver answered 200 is stored exactly once."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import (
    Proc,
    Receiver,
    Servers,
    start_receiver,
    start_worker,
    stored_per_message,
    wait_for,
)

from ingest.store import projects

CALLS_PER_REQUEST = 20


class Senders:
    """Clients behind a load balancer: each request goes to a live receiver; a refused
    connection or a 5xx is retried on the next one, as SDKs retry."""

    def __init__(self, key: str, urls: list[str]) -> None:
        self.key = key
        self.urls = urls
        self.accepted: list[str] = []
        self.retried = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self._n = 0

    def _batch(self) -> list[dict[str, object]]:
        with self.lock:
            start, self._n = self._n, self._n + CALLS_PER_REQUEST
        return [
            {"type": "track", "event": "Scale", "anonymousId": f"s{i % 50}",
             "messageId": f"scale-{i}"}
            for i in range(start, start + CALLS_PER_REQUEST)
        ]  # fmt: skip

    def run(self, worker_no: int) -> None:
        with httpx.Client(timeout=10) as client:
            turn = worker_no
            while not self.stop.is_set():
                batch = self._batch()
                while True:
                    url = self.urls[turn % len(self.urls)]
                    turn += 1
                    try:
                        answer = client.post(url + "/v1/batch", auth=(self.key, ""),
                                             json={"batch": batch})  # fmt: skip
                        if answer.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    with self.lock:
                        self.retried += 1
                    time.sleep(0.05)
                with self.lock:
                    self.accepted += [str(c["messageId"]) for c in batch]
                time.sleep(0.05)


def _worker(servers: Servers, tmp: Path, name: str, started: list[Proc]) -> Proc:
    proc = start_worker(servers, tmp, name=name, concurrency=1)
    started.append(proc)
    wait_for(lambda: "ready." in proc.output(), timeout=60)
    return proc


def _restart_worker(old: Proc, servers: Servers, tmp: Path, name: str, started: list[Proc]) -> Proc:
    # warm shutdown: the batch in hand is finished, the prefetched one goes back to Redis
    assert old.stop(signal.SIGTERM, timeout=60) == 0, old.output()[-2000:]
    return _worker(servers, tmp, name, started)


def _restart_receiver(
    old: Receiver, senders: Senders, servers: Servers, tmp: Path, started: list[Proc]
) -> Receiver:
    new = start_receiver(servers, tmp)
    started.append(new.proc)
    senders.urls.append(new.url)  # the load balancer learns the new one ...
    senders.urls.remove(old.url)  # ... and drains the old one before it is stopped
    time.sleep(0.5)
    # uvicorn finishes in-flight requests, then exits re-raising the SIGTERM it caught
    assert old.proc.stop(signal.SIGTERM, timeout=60) in (0, -signal.SIGTERM)
    assert "Finished server process" in old.proc.output(), old.proc.output()[-2000:]
    return new


@pytest.mark.slow
def test_rolling_restart_of_two_receivers_and_two_workers_loses_no_call(
    servers: Servers, db: psycopg.Connection, tmp_path: Path
) -> None:
    project = projects.create(db, f"scale-{secrets.token_hex(3)}")
    receivers: list[Receiver] = []
    workers: list[Proc] = []
    started: list[Proc] = []  # everything, restarted ones included, stopped at the end
    senders = Senders(project.public_key, [])
    threads = [threading.Thread(target=senders.run, args=(i,)) for i in range(4)]
    try:
        for _ in range(2):
            receivers.append(start_receiver(servers, tmp_path))
            started.append(receivers[-1].proc)
        workers = [_worker(servers, tmp_path, f"s{i}", started) for i in range(2)]
        senders.urls.extend(r.url for r in receivers)
        for t in threads:
            t.start()
        time.sleep(2)
        workers[0] = _restart_worker(workers[0], servers, tmp_path, "s0b", started)
        receivers[0] = _restart_receiver(receivers[0], senders, servers, tmp_path, started)
        workers[1] = _restart_worker(workers[1], servers, tmp_path, "s1b", started)
        receivers[1] = _restart_receiver(receivers[1], senders, servers, tmp_path, started)
        time.sleep(1)
        senders.stop.set()
        for t in threads:
            t.join(30)
        accepted = set(senders.accepted)
        assert len(accepted) == len(senders.accepted) >= 500

        def all_stored() -> bool:
            row = db.execute(
                "SELECT count(*) FROM events WHERE project_id = %s", (project.id,)
            ).fetchone()
            return row is not None and row[0] >= len(accepted)

        wait_for(all_stored, timeout=120, interval=0.5)
    finally:
        senders.stop.set()
        for t in threads:
            if t.is_alive():
                t.join(30)
        for proc in started:
            proc.stop()
    stored = stored_per_message(db, project.id)
    assert set(stored) == accepted  # nothing lost, nothing stored that was not accepted
    assert set(stored.values()) == {1}  # nothing twice
