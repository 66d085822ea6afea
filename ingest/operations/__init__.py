"""The operations layer: every operator action, written once.

The CLI (`ingest/commands/`), the admin API (`ingest/api/`) and the console all call these
functions and nothing below them: an action that exists in one surface exists in the
others with the same rules, the same checks of who may do it, the same audit record.

Each function takes an `Ops` (a connection, the settings, Redis when needed, and the
`Actor` asking) and typed arguments, and answers a pydantic model: the API serializes it
as is (and documents it from the same model), the CLI prints it as JSON or as a table.
Failures are `OperationError`s (`errors.py`) carrying an HTTP status, a `code` and a
`message`: the API answers them as JSON, the CLI prints the message and exits 1.
"""
