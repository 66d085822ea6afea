"""Every kind of job, declared once: its name, what it does, and the setting of its
schedule. The store, the CLI, the admin API and OpenAPI (here, in `ingest`) and the beat
schedule read these; how each kind runs is registered by the workers
(workers/jobs/kinds.py), which checks that every kind declared here has a runner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    what: str
    # the Settings field holding its interval in seconds (0 turns the schedule off)
    schedule_setting: str
    # one run per project (reprocessing a project's window) or one for all
    per_project: bool = False


AUTO_REPLAY = JobKind(
    "auto_replay",
    "replay dead letters whose failure was transient (budget, maximum age)",
    "schedule_auto_replay_seconds",
)
EXPIRE = JobKind(
    "expire",
    "expire dedup keys past the window, and data past the retention; reset stuck replays",
    "schedule_expire_seconds",
)
REPROCESS = JobKind(
    "reprocess",
    "reprocess each project's last `KOALA_REPROCESS_WINDOW_HOURS` with today's rules",
    "schedule_reprocess_seconds",
    per_project=True,
)
IDENTITY_CHECK = JobKind(
    "identity_check",
    "merge profiles that share an identifier, through the guarded merge",
    "schedule_identity_check_seconds",
)

KINDS: dict[str, JobKind] = {k.name: k for k in (AUTO_REPLAY, EXPIRE, REPROCESS, IDENTITY_CHECK)}
NAMES = tuple(KINDS)
# the kinds an operator may run now from the CLI, for all projects
RUN_NOW = tuple(k.name for k in KINDS.values() if not k.per_project)
