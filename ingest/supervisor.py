"""`koala-ingest up`: run the whole pipeline on one machine, and own every process it starts.

Each role is a child process (embedded `postgres` and Redis (`valkey-server`), then `koala-ingest
worker|beat|web`), its output prefixed with its name. A child that dies is restarted with a
backoff that resets once it has stayed up a while.

`up` owns what it starts (issue #13: a closed terminal or a `kill -9` of `up` used to leave
the whole stack running under init, and the next `up` started a second one beside it):

- every child is tethered (`ingest/tether.py`): the kernel sends it a signal when `up` dies,
  however it dies, SIGKILL included (Linux `PR_SET_PDEATHSIG`; elsewhere children are not
  tethered). PostgreSQL gets SIGINT, its *fast* shutdown (transactions rolled back, a
  checkpoint, `postmaster.pid` removed: the next start is a clean one); the others SIGTERM,
  their graceful stop. The children of children follow: PostgreSQL's backends exit when
  their postmaster does, Celery stops its pool;
- our own children (web, worker, beat) also watch for `up`'s death and SIGKILL their process
  group if their graceful stop outlasts their grace (`exit_when_orphaned`), so a stop
  without `up` is bounded too;
- SIGHUP (the terminal closed), SIGINT (Ctrl-C) and SIGTERM stop the stack the same way:
  each child gets its stop signal, then SIGKILL of its process group after its grace
  (`Child.grace`), in the reverse order of start: receiver first (no new calls), then beat
  and the worker (which finish or requeue their batch), then Redis, PostgreSQL last;
- `hold_folder` takes an exclusive lock on the data dir for `up`'s lifetime, and
  `port_in_use` checks the receiver's port before anything starts: a second `up` says why
  in one line and exits.

Output to a terminal that is gone (SIGHUP) fails with EIO: `Output` then sends ours to
/dev/null and keeps draining the children's pipes, or a child blocked on a full pipe could
not stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

STABLE_SECONDS = 30.0
MAX_BACKOFF = 30.0
TETHER = Path(__file__).with_name("tether.py")
TETHERED = sys.platform.startswith("linux")
NAME_WIDTH = len("postgres")

# Between `up` and its Python children (not settings: `up` sets them for each child).
UP_PID_ENV = "KOALA_UP_PID"
UP_GRACE_ENV = "KOALA_UP_GRACE_SECONDS"


class Stopping(Exception):
    """A stop was asked for (signal) while `up` was still starting."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    grace: float = 30.0  # seconds between the stop signal and SIGKILL
    stop_signal: signal.Signals = signal.SIGTERM
    death_signal: signal.Signals = signal.SIGTERM  # sent by the kernel when `up` dies
    user: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    restarts: int = 0
    _reader: threading.Thread | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        if not TETHERED:
            return self.argv
        user = ["--user", self.user] if self.user else []
        parent = str(os.getpid())
        return [sys.executable, "-I", "-S", str(TETHER), *user, self.death_signal.name, parent,
                "--", *self.argv]  # fmt: skip

    def start(self, out: Output) -> None:
        """Start from the main thread: the kernel's parent-death signal follows the thread
        that forked, and only the main thread lives as long as `up`."""
        assert threading.current_thread() is threading.main_thread()
        env = dict(self.env, **{UP_PID_ENV: str(os.getpid()), UP_GRACE_ENV: str(self.grace)})
        self.process = subprocess.Popen(
            self.command(),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a terminal's Ctrl-C/SIGHUP reach only us: we stop in order
            user=None if TETHERED else self.user,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        self._reader = threading.Thread(
            target=out.pump, args=(self.name, self.process), daemon=True
        )
        self._reader.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, out: Output) -> None:
        """Stop signal, then SIGKILL of the process group after `grace` seconds."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                out.say("up", f"{self.name} did not stop in {self.grace:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            out.say("up", f"{self.name} stopped")
        if self._reader is not None:
            self._reader.join(timeout=2)


class Output:
    """Serializes the children's lines onto our stdout, each prefixed by its role."""

    def __init__(self, width: int = NAME_WIDTH) -> None:
        self._lock = threading.Lock()
        self._width = width

    def write(self, text: str) -> None:
        with self._lock:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except OSError:
                # The terminal is gone (EIO after a hang-up) or the pipe closed: write
                # nowhere from now on, including the interpreter's flush at exit.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.dup2(devnull, sys.stderr.fileno())
                os.close(devnull)

    def say(self, name: str, line: str) -> None:
        self.write(f"{name:<{self._width}} | {line}\n")

    def pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            self.say(name, raw.decode("utf-8", "replace").rstrip())


class Supervisor:
    """Starts children in order, restarts those that die, stops them in reverse order."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.out = Output()
        self._stopping = threading.Event()

    def request_stop(self, signum: int, _frame: object) -> None:
        if not self._stopping.is_set():
            self.out.say("up", f"received {signal.Signals(signum).name}, stopping")
        self._stopping.set()

    def install_signals(self) -> None:
        # SIGHUP: the terminal running `up` was closed; stop like Ctrl-C, not die unseen.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.request_stop)

    def start(self, child: Child) -> None:
        """Start `child` (stopped in reverse order); Stopping if a stop was asked for while
        `up` was starting (migrations, say), so nothing more is started."""
        if self._stopping.is_set():
            raise Stopping
        self.children.append(child)
        child.start(self.out)

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` while restarting dead children; Stopping on a signal."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self._stopping.wait(0.2):
                raise Stopping
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
            self._watch()

    def run(self) -> int:
        while not self._stopping.wait(0.25):
            self._watch()
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
        """Reverse order of start: the receiver first, PostgreSQL last."""
        self._stopping.set()
        for child in reversed(self.children):
            child.stop(self.out)


def hold_folder(folder: Path) -> int | str:
    """Lock `folder` for this process's lifetime: the lock's fd, or the holder's PID.

    `flock` on `up.lock`: the kernel drops it when the process dies, however it dies, so a
    `kill -9` never leaves a stale lock. The fd is not inherited by children (Python's
    default), so the lock names the live `up`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "up.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        return holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def port_in_use(host: str, port: int) -> str | None:
    """Why the receiver could not listen on host:port, or None: a trial bind with the
    options uvicorn uses (SO_REUSEADDR), so a port in TIME_WAIT is not "in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.strerror or str(error)
    return None


def exit_when_orphaned() -> None:
    """In a child of `up`: once `up` is gone, allow the graceful stop its grace, then SIGKILL
    our process group (the worker's pool included).

    The parent-death signal starts the graceful stop; nothing but us is left to bound it
    (uvicorn's lifespan shutdown and Celery's warm shutdown have no limit of their own)."""
    parent = os.environ.get(UP_PID_ENV)
    if not parent or not TETHERED:
        return
    grace = float(os.environ.get(UP_GRACE_ENV, "30"))

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        time.sleep(grace)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
