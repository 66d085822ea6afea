"""Long jobs: reprocessing and the scheduled jobs, run step by step by one runner.

- base.py: what a job kind is made of (`Job`, `Step`, `Context`, `Builder`);
- runner.py: the `Runner` that claims, steps, retries, slices and records every kind;
- kinds.py: each kind's builder and parameters (the kinds are declared in
  ingest/jobkinds.py);
- reprocessing.py, maintenance.py: the kinds themselves.
"""

from workers.jobs.base import STALE_SECONDS, Builder, Context, Job, Step, parse_time
from workers.jobs.reprocessing import ReprocessJob, enqueue, start_reprocess
from workers.jobs.runner import Runner

__all__ = [
    "STALE_SECONDS",
    "Builder",
    "Context",
    "Job",
    "ReprocessJob",
    "Runner",
    "Step",
    "enqueue",
    "parse_time",
    "start_reprocess",
]
