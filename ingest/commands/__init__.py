"""The `koala-ingest` command groups, one module each; `ingest/cli.py` assembles them.

Operator commands call `ingest.operations` (the same functions as the admin API and the
console) and only print; process commands (web, worker, beat, up) start servers.
"""
