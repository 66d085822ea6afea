"""The supervisor's bounds on real processes: a child that ignores its stop signal is killed
after its grace, with its own children, whether `up` is there to do it or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import wait_for

from ingest.supervisor import TETHER, Child, Output, hold_folder

# A stubborn child: ignores SIGTERM, has a child of its own (like the worker's pool), and
# like web/worker/beat calls exit_when_orphaned.
STUBBORN = """
import signal, subprocess, sys, time
from ingest.supervisor import exit_when_orphaned

signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
exit_when_orphaned()
print(grandchild.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stubborn(grace: float) -> Child:
    return Child("stubborn", [sys.executable, "-c", STUBBORN], {}, grace=grace)


def test_a_child_that_ignores_its_stop_signal_is_killed_with_its_children_after_its_grace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    child = _stubborn(grace=1)
    child.start(Output())
    assert child.process is not None
    grandchild = wait_for(lambda: psutil.Process(child.process.pid).children(), timeout=20)
    assert isinstance(grandchild, list)
    asked = time.monotonic()
    child.stop(Output())
    took = time.monotonic() - asked
    assert 1 <= took < 3, took
    assert child.process.returncode == -signal.SIGKILL
    wait_for(lambda: _gone(grandchild[0].pid), timeout=5)
    assert "stubborn did not stop in 1s; killing it" in capsys.readouterr().out


UP = """
import sys, time
from ingest.supervisor import Child, Supervisor

supervisor = Supervisor()
supervisor.start(Child("stubborn", [sys.executable, "-c", sys.argv[1]], {}, grace=1))
time.sleep(600)
"""


def test_an_orphaned_child_that_ignores_sigterm_kills_itself_and_its_children_after_its_grace(
    tmp_path: Path,
) -> None:
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-c", UP, STUBBORN], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    child: psutil.Process | None = None
    try:
        grandchild_pid = int(str(wait_for(lambda: log.read_text().split("| ")[-1].strip())))
        child = psutil.Process(grandchild_pid).parent()
        assert child is not None and child.ppid() == up.pid
        up.kill()  # SIGKILL: nothing of `up` is left to escalate
        killed = time.monotonic()
        wait_for(lambda: _gone(child.pid) and _gone(grandchild_pid), timeout=10)
        took = time.monotonic() - killed
        # SIGTERM (parent-death signal) ignored; its own watch kills the group after 1 s.
        assert 1 <= took < 4, took
    finally:
        if up.poll() is None:
            up.kill()
        up.wait()
        if child is not None and not _gone(child.pid):  # the test failed: clean up
            os.killpg(child.pid, signal.SIGKILL)


def test_the_data_folder_lock_names_its_holder_and_is_freed_when_the_holder_dies(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ingest.supervisor import hold_folder;"
         " from pathlib import Path; hold_folder(Path(sys.argv[1])); print('held', flush=True);"
         " time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert hold_folder(tmp_path) == str(holder.pid)
        holder.kill()
        holder.wait()
        held = hold_folder(tmp_path)  # a SIGKILL leaves no stale lock
        assert isinstance(held, int)
        os.close(held)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_tethered_command_is_not_started_when_its_parent_is_already_gone(
    tmp_path: Path,
) -> None:
    # `up` died between its fork and the prctl: the PID it passed is no longer our parent.
    ran = tmp_path / "ran"
    not_parent = os.getppid()  # pytest's parent, not the tether's
    tether = TETHER
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(tether), "SIGTERM", str(not_parent), "--",
         "touch", str(ran)],
        capture_output=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert b"exited before touch started; not starting it" in result.stderr
    assert not ran.exists()
    started = subprocess.run(
        [sys.executable, "-I", "-S", str(tether), "SIGTERM", str(os.getpid()), "--",
         "touch", str(ran)],
    )  # fmt: skip
    assert started.returncode == 0 and ran.exists()
