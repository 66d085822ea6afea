"""Settings come from the environment and a wrong value stops the process in one line."""

from __future__ import annotations

import subprocess

import pytest
from conftest import koala

from ingest.config import ConfigError, load


def test_defaults_need_only_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    settings = load()
    assert settings.port == 8000
    assert settings.dedup_window_days >= 7
    assert "undefined" in settings.blocked_identifiers


def test_blocked_identifiers_are_configurable_as_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KOALA_BLOCKED_IDENTIFIERS", "Nobody, N/A")
    assert load().blocked_identifiers == ("nobody", "n/a")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("KOALA_QUEUE_MAX_DEPTH", "-1"),
        ("KOALA_WEB_DRAIN_SECONDS", "-1"),
        ("KOALA_WEB_DRAIN_SECONDS", "soon"),
        ("KOALA_MAX_HEADER_BYTES", "10"),
        ("KOALA_HEADER_TIMEOUT_SECONDS", "0"),
        ("KOALA_BODY_TIMEOUT_SECONDS", "soon"),
        ("KOALA_KEEP_ALIVE_SECONDS", "0"),
        ("KOALA_MAX_CONNECTIONS", "0"),
        ("KOALA_BACKLOG", "-5"),
    ],
)
def test_a_wrong_value_is_reported_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        load()


def test_a_process_with_a_wrong_value_exits_with_one_line() -> None:
    import os

    env = dict(os.environ, PORT="eighty")
    done = subprocess.run(koala("migrate"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("koala-ingest: invalid configuration: PORT:")
