"""What an operation refuses, as a `code` and a `message` every surface can show.

The status is HTTP's because the API is the richest surface; the CLI prints the message
and exits 1 (2 for `Invalid`, as for a usage error).
"""

from __future__ import annotations


class OperationError(Exception):
    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Invalid(OperationError):
    """The request itself is wrong: fix it and send it again."""

    status = 400


class Unauthorized(OperationError):
    status = 401


class Forbidden(OperationError):
    """The actor may not do this (a viewer acting, a token of another project)."""

    status = 403


class NotFound(OperationError):
    status = 404


class Conflict(OperationError):
    """The state forbids it now (a job already running, a name taken)."""

    status = 409


class Unavailable(OperationError):
    """A server the operation needs is down: try again later."""

    status = 503
