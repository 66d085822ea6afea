"""`koala-ingest up`: run the whole pipeline on one machine and keep it running.

Each role is a child process (`koala-ingest web|worker|beat`, and the embedded
`redis-server`), its output prefixed with its name. A child that dies is restarted with
a backoff that resets once it has stayed up a while. Ctrl-C or SIGTERM stops the
receiver first (no new calls), then beat and the workers (which finish or requeue their
batch), then Redis, so nothing in flight is cut off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

STOP_ORDER = ("web", "beat", "worker", "redis")
GRACE_SECONDS = 30.0
STABLE_SECONDS = 30.0
MAX_BACKOFF = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0
    _reader: threading.Thread | None = field(default=None, repr=False)

    def start(self, out: Output) -> None:
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        self._reader = threading.Thread(
            target=out.pump, args=(self.name, self.process), daemon=True
        )
        self._reader.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Output:
    """Serializes the children's lines onto our stdout, each prefixed by its role."""

    def __init__(self, width: int) -> None:
        self._lock = threading.Lock()
        self._width = width

    def say(self, name: str, line: str) -> None:
        with self._lock:
            sys.stdout.write(f"{name:<{self._width}} | {line}\n")
            sys.stdout.flush()

    def pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(name, raw.decode("utf-8", "replace").rstrip())


class Supervisor:
    def __init__(self, children: Sequence[Child]) -> None:
        self.children = list(children)
        self.out = Output(max(len(c.name) for c in self.children))
        self._stopping = threading.Event()

    def request_stop(self, signum: int, _frame: object) -> None:
        self.out.say("up", f"received {signal.Signals(signum).name}, stopping")
        self._stopping.set()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        for child in self.children:
            if not child.alive():
                child.start(self.out)
        while not self._stopping.wait(0.25):
            self._watch()
        self.stop_all()
        return 0

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive():
                if now - child.started_at > STABLE_SECONDS:
                    child.backoff = 1.0
                continue
            if child.restart_at is None:
                code = child.process.returncode if child.process else None
                child.restart_at = now + child.backoff
                self.out.say(
                    "up", f"{child.name} exited with {code}; restarting in {child.backoff:.0f}s"
                )
                child.backoff = min(child.backoff * 2, MAX_BACKOFF)
            elif now >= child.restart_at:
                child.restarts += 1
                child.start(self.out)

    def stop_all(self) -> None:
        by_name = {c.name: c for c in self.children}
        order = [by_name[n] for n in STOP_ORDER if n in by_name]
        order += [c for c in self.children if c not in order]
        for child in order:
            if not child.alive():
                continue
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.out.say("up", f"{child.name} did not stop in {GRACE_SECONDS:.0f}s; killing")
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            if child._reader is not None:
                child._reader.join(timeout=2)
            self.out.say("up", f"{child.name} stopped")
