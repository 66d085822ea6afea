"""Log lines (ingest/logs.py): JSON for shippers, text for people, both with the fields
an operator filters on."""

from __future__ import annotations

import io
import json
import logging

from ingest.logs import JsonFormatter, TextFormatter


def _emit(formatter: logging.Formatter, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test-logs-{id(formatter)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    extra = {"stage": "store", "project": 7, "message_id": "m-1"}
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("poison call isolated", extra=extra)
    else:
        logger.warning("call dead-lettered: %s", "no receivedAt", extra=extra)
    return stream.getvalue()


def test_json_lines_are_one_object_each_with_project_message_id_and_stage() -> None:
    lines = _emit(JsonFormatter(), exc=True).splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert (record["stage"], record["project"], record["message_id"]) == ("store", 7, "m-1")
    assert record["level"] == "error" and "ValueError: boom" in record["exc"]


def test_text_lines_append_the_fields_before_any_traceback() -> None:
    text = _emit(TextFormatter(), exc=True)
    first = text.splitlines()[0]
    assert first.endswith("poison call isolated [stage=store project=7 message_id=m-1]")
    assert "ValueError: boom" in text
    assert "[stage=store project=7 message_id=m-1]" in _emit(TextFormatter())
