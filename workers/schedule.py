"""The beat schedule, in one place: which jobs run when, and how a run knows its period.

Every entry is an interval in seconds from a setting (0 turns it off). Safety against
doubled runs is layered: celery-redbeat's Redis lock lets one beat process send the
schedule however many are started; a run records its period (`epoch // interval`) and a
unique index refuses a second run of a kind in one period; and a run that finds its kind
still active (the previous run is slow) is recorded as `skipped` rather than started on
top of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.config import Settings

# The sweep that hands stalled jobs (a lost continuation, a killed runner) to a worker.
RESUME_EVERY_SECONDS = 60
# The sweep that queues again the batches a killed consumer lost (workers/recovery.py).
RECOVER_EVERY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Scheduled:
    kind: str
    setting: str  # the Settings field holding the interval in seconds
    what: str


SCHEDULE = (
    Scheduled(
        "auto_replay",
        "schedule_auto_replay_seconds",
        "replay dead letters whose failure was transient (budget, maximum age)",
    ),
    Scheduled(
        "expire",
        "schedule_expire_seconds",
        "expire dedup keys past the window, and data past the retention",
    ),
    Scheduled(
        "identity_check",
        "schedule_identity_check_seconds",
        "merge profiles that share an identifier, through the guarded merge",
    ),
)


def interval(settings: Settings, kind: str) -> int:
    for entry in SCHEDULE:
        if entry.kind == kind:
            return int(getattr(settings, entry.setting))
    raise KeyError(kind)


def period(settings: Settings, kind: str, now: float) -> int:
    """The period a run started at `now` belongs to: one run per kind and period."""
    return int(now // interval(settings, kind))


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        "resume-jobs": {"task": "koala.resume_jobs", "schedule": float(RESUME_EVERY_SECONDS)},
        "recover-lost": {
            "task": "koala.recover_lost",
            "schedule": float(min(RECOVER_EVERY_SECONDS, settings.lost_after_seconds)),
        },
    }
    for entry in SCHEDULE:
        every = interval(settings, entry.kind)
        if every:
            out[entry.kind] = {
                "task": "koala.scheduled",
                "schedule": float(every),
                "args": (entry.kind,),
            }
    return out
