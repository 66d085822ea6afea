"""Run a command that dies with `koala-ingest up`, whatever kills `up` (Linux only).

`up` starts each child as `python -I -S tether.py [--user NAME] SIGNAL UP_PID -- COMMAND...`:
this script asks the kernel, with `prctl(PR_SET_PDEATHSIG, SIGNAL)`, to send SIGNAL to this
process when its parent dies, then replaces itself with COMMAND (same PID; the setting
survives `execve` of a binary that is not set-user-ID). Without it, a `kill -9` of `up` or a
closed terminal left PostgreSQL, Redis, the receiver, the worker and beat running under
init (issue #13).

Why a separate script rather than `preexec_fn`: `up` has threads (one per child, reading
its output), and CPython documents `preexec_fn` as unsafe with threads (the child may
deadlock before `exec`). This script is stdlib only and runs with `-I -S` (no site-packages):
it costs about 20 ms per child start.

What the kernel really does, and what this script does about it:

- the signal is sent when the parent *thread* that forked us exits, not the process: `up`
  starts every child from its main thread, which lives as long as `up`;
- the setting is cleared when credentials change, so a child that must run as another user
  (PostgreSQL refuses root: as root `up` runs it as `embedded_postgres`) is switched by
  this script (`--user NAME`) *before* the `prctl`; switching in `subprocess` instead would
  also need that user to read this Python, often under /root;
- `up` may die between its `fork` and our `prctl`; then we already belong to another parent.
  So we compare `os.getppid()` with the PID `up` passed us right after the `prctl`, and exit
  without running COMMAND if they differ.

Elsewhere than Linux there is no `PR_SET_PDEATHSIG`: COMMAND runs untethered (the `up`
docstring and README say so).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tether(death_signal: int, parent_pid: int) -> bool:
    """Ask for `death_signal` when our parent dies; False when it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    return os.getppid() == parent_pid


def become(user: str) -> None:
    """Switch to `user` for good (groups, then group, then user: the order setuid needs)."""
    import pwd

    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "--user":
        become(argv[1])
        argv = argv[2:]
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: tether.py [--user NAME] SIGNAL PARENT_PID -- COMMAND...")
    death_signal = signal.Signals[argv[0]] if not argv[0].isdigit() else int(argv[0])
    if not tether(int(death_signal), int(argv[1])):
        sys.exit(f"tether: parent {argv[1]} exited before {argv[3]} started; not starting it")
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])
