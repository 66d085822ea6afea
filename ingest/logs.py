"""Logging for every process: readable text by default (`koala-ingest up`, a terminal),
one JSON object per line with KOALA_LOG_FORMAT=json (production, log shippers).

Log calls pass what an operator filters on as `extra` fields (`project`, `message_id`,
`stage`, `batch`, `reason`, `job`): JSON lines carry them as keys, text lines append
them as `key=value`."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


# Structured fields libraries attach that repeat the message (Celery's task `data`).
TEXT_HIDDEN = frozenset({"data"})


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in _extras(record).items() if k not in TEXT_HIDDEN}
        if not extras:
            return line
        fields = " ".join(f"{k}={v}" for k, v in extras.items())
        head, newline, tail = line.partition("\n")  # a traceback stays below the fields
        return f"{head} [{fields}]{newline}{tail}"


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
