"""The failure path beside the flow: what a failure is (`policy.classify`), what happens to
the batch (`policy.RetryPolicy.decide`: retry after a backoff, dead-letter, or hold), and
how the calls that break a batch for good are found and dead-lettered alone
(`isolation`). Replay of dead letters is `ingest/replay.py`."""
