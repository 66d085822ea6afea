"""Long jobs: reprocessing and the scheduled jobs, run step by step by one runner.

- base.py: what a job kind is made of (`Job`, `Step`, `Context`, `Builder`);
- runner.py: the `Runner` that claims, steps, retries, slices and records every kind
  (imported from there: this package's names are what the kinds are made of);
- kinds.py: each kind's builder and parameters (the kinds are declared in
  ingest/jobkinds.py);
- reprocessing.py, maintenance.py: the kinds themselves.
"""

from workers.jobs.base import Builder, Context, Job, Step
from workers.jobs.reprocessing import ReprocessJob

__all__ = ["Builder", "Context", "Job", "ReprocessJob", "Step"]
